/* EmbBERT forward pass over one static arena (see embbert.h; the plan is in embbert_model.h).
 *
 * Arena plan (offsets from the exporter, each 16-byte aligned), sized for n = L tokens:
 *   XF  f32 x max fan-in     the current Dense input as f32         (scratch)
 *   XQ  int8 x max fan-in    its per-row int8 copy                  (scratch, int8 kernels only)
 *   ROW act x max(d, r, C)   one row: a gathered table row, q_t, P.u_t, s_t, the logits (scratch)
 *   R0, R1  act x L*d        the layer input and output, swapping roles each layer
 *   R2  act x max(L*L, L*d_i) all probability rows, then the conv output (embbert layers)
 *   R3  act x L*d            u, when the residual keeps x alive
 * R0..R3 are the memory rule's terms (memory.stage_activations): L^2 + L*d + L*d_i for an EmbBERT layer.
 * Softmax recomputes each score instead of holding an f32 row, so the scratch stays a few rows.
 */
#include "embbert.h"

#include <math.h> /* expf, sqrtf only */

#if defined(__FAST_MATH__)
#error "embbert.c must not be built with -ffast-math: it reorders the float sums the reference fixes"
#endif
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define EMBBERT_ALIGNED __attribute__((aligned(16)))
#else
#define EMBBERT_ALIGNED
#endif

#define EMBBERT_GUARD_BYTES 64

static uint8_t embbert_arena[EMBBERT_ARENA_BYTES + EMBBERT_GUARD_BYTES] EMBBERT_ALIGNED;

/* ---------------------------------------------------------------------------------------- numbers */

typedef union { uint32_t u; float f; } bits32_t;

static float h2f(uint16_t h) { /* exact for every half, subnormals by one exact float subtraction */
  bits32_t o, magic;
  uint32_t exp;
  magic.u = 113u << 23;
  o.u = (uint32_t)(h & 0x7fffu) << 13;
  exp = o.u & 0x0f800000u;
  o.u += (127u - 15u) << 23;
  if (exp == 0x0f800000u) {
    o.u += (128u - 16u) << 23; /* inf, nan */
  } else if (exp == 0) {
    o.u += 1u << 23;
    o.f -= magic.f; /* zero, subnormal */
  }
  o.u |= (uint32_t)(h & 0x8000u) << 16;
  return o.f;
}

/* Round half to even for |v| < 2^22 (the FPU's default mode; no libm rintf). */
static float rne(float v) {
  volatile float big = 12582912.0f; /* 1.5 * 2^23 */
  return v >= 0.0f ? (v + big) - big : -((-v + big) - big);
}

#if EMBBERT_ACT_FP16
/* float -> fp16 bits, round to nearest even (as NumPy's astype(float16)). */
static uint16_t f2h(float f) {
  bits32_t in;
  uint32_t ax, sign, h, rem;
  in.f = f;
  sign = (in.u >> 16) & 0x8000u;
  ax = in.u & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
  if (ax < 0x38800000u) { /* below 2^-14: a multiple of 2^-24 (1024 is the smallest normal) */
    bits32_t a;
    a.u = ax;
    return (uint16_t)(sign | (uint32_t)rne(a.f * 16777216.0f));
  }
  h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
  rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}
#endif

#if EMBBERT_ACT_FP16
typedef uint16_t act_t;
static float a2f(act_t v) { return h2f(v); }
static act_t f2a(float v) { return f2h(v); }
#else
typedef float act_t;
static float a2f(act_t v) { return v; }
static act_t f2a(float v) { return v; }
#endif

/* Element i of a tensor whose last axis has `cols` channels, as f32 (int8: q * scale, both as f32). */
static float tval(const embbert_tensor_t *t, size_t i, size_t cols) {
  switch (t->type) {
    case EMBBERT_F32: return ((const float *)t->data)[i];
    case EMBBERT_F16: return h2f(((const uint16_t *)t->data)[i]);
    default: return (float)((const int8_t *)t->data)[i] * h2f(t->scale[i % cols]);
  }
}

#if EMBBERT_NUM_LAYERS > 0
/* NumPy's pairwise float32 sum of a contiguous row (numpy/_core/src/umath/loops_utils.h.src), so that
 * mean(x * x) in RMSNorm rounds as the reference's np.mean. */
static float pairwise_sum(const float *a, int n) {
  if (n < 8) {
    float res = 0.0f;
    int i;
    for (i = 0; i < n; i++) res += a[i];
    return res;
  } else if (n <= 128) {
    float r[8], res;
    int i;
    for (i = 0; i < 8; i++) r[i] = a[i];
    for (i = 8; i < n - (n % 8); i += 8) {
      r[0] += a[i + 0]; r[1] += a[i + 1]; r[2] += a[i + 2]; r[3] += a[i + 3];
      r[4] += a[i + 4]; r[5] += a[i + 5]; r[6] += a[i + 6]; r[7] += a[i + 7];
    }
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  } else {
    int n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
  }
}
#endif

/* ------------------------------------------------------------------------------------------ arena */

#define XF ((float *)(embbert_arena + EMBBERT_OFF_XF))
#define XQ ((int8_t *)(embbert_arena + EMBBERT_OFF_XQ))
#define ROW ((act_t *)(embbert_arena + EMBBERT_OFF_ROW))
#define REGION(off) ((act_t *)(embbert_arena + (off)))

void embbert_arena_paint(uint8_t pattern) { memset(embbert_arena, pattern, sizeof(embbert_arena)); }

size_t embbert_arena_high_water(uint8_t pattern) {
  size_t i = EMBBERT_ARENA_BYTES;
  while (i > 0 && embbert_arena[i - 1] == pattern) i--;
  return i;
}

int embbert_arena_guard_ok(uint8_t pattern) {
  size_t i;
  for (i = EMBBERT_ARENA_BYTES; i < sizeof(embbert_arena); i++)
    if (embbert_arena[i] != pattern) return 0;
  return 1;
}

/* --------------------------------------------------------------------------------------- kernels */

static void to_f32(const act_t *x, int n, float *out) {
  int i;
  for (i = 0; i < n; i++) out[i] = a2f(x[i]);
}

/* y = x W + b for one row; x (f32, in XF) is never overwritten, y may be any act row. */
static void dense(const embbert_dense_t *D, const float *x, act_t *y) {
  int i, o;
  if (D->kernel.type == EMBBERT_I8) {
    const int8_t *w = (const int8_t *)D->kernel.data;
    int8_t *xq = XQ;
    float amax = 0.0f, sx;
    for (i = 0; i < D->in; i++) {
      float a = x[i] < 0.0f ? -x[i] : x[i];
      if (a > amax) amax = a;
    }
    sx = amax / 127.0f;
    if (!(sx > 0.0f)) sx = 1.0f;
    for (i = 0; i < D->in; i++) {
      float q = rne(x[i] / sx);
      xq[i] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : (int)q);
    }
    for (o = 0; o < D->out; o++) {
      const int8_t *wo = w + (size_t)o * (size_t)D->in;
      int32_t acc = 0;
      float v, sc;
      for (i = 0; i < D->in; i++) acc += (int32_t)xq[i] * (int32_t)wo[i];
      sc = sx * h2f(D->kernel.scale[o]);
      v = (float)acc * sc;
      if (D->bias.data) v = v + tval(&D->bias, (size_t)o, (size_t)D->out);
      y[o] = f2a(v);
    }
  } else { /* float kernels: sequential f32 sums (typed loops, no per-element dispatch) */
    for (o = 0; o < D->out; o++) {
      float acc = 0.0f;
      size_t base = (size_t)o * (size_t)D->in;
      if (D->kernel.type == EMBBERT_F32) {
        const float *w = (const float *)D->kernel.data + base;
        for (i = 0; i < D->in; i++) acc += x[i] * w[i];
      } else {
        const uint16_t *w = (const uint16_t *)D->kernel.data + base;
        for (i = 0; i < D->in; i++) acc += x[i] * h2f(w[i]);
      }
      if (D->bias.data) acc = acc + tval(&D->bias, (size_t)o, (size_t)D->out);
      y[o] = f2a(acc);
    }
  }
}

static void embed(const int32_t *ids, int n, act_t *x) {
  const embbert_model_t *M = &embbert_model;
  const int d = EMBBERT_HIDDEN;
  int t, j, seg = 1;
  for (t = 0; t < n; t++) {
    act_t *xt = x + (size_t)t * d;
    const int r = EMBBERT_EMBED_DIM;
    if (ids[t] == EMBBERT_SEP_ID) seg = 2;
    for (j = 0; j < r; j++) ROW[j] = f2a(tval(&M->token, (size_t)ids[t] * r + (size_t)j, (size_t)r));
    to_f32(ROW, r, XF);
    dense(&M->token_proj, XF, xt);
    for (j = 0; j < r; j++) ROW[j] = f2a(tval(&M->position, (size_t)t * r + (size_t)j, (size_t)r));
    to_f32(ROW, r, XF);
    dense(&M->position_proj, XF, ROW);
    for (j = 0; j < d; j++) xt[j] = f2a(a2f(xt[j]) + a2f(ROW[j]));
    for (j = 0; j < d; j++)
      xt[j] = f2a(a2f(xt[j]) + a2f(f2a(tval(&M->segment, (size_t)seg * d + (size_t)j, (size_t)d))));
  }
}

#if EMBBERT_USE_CONV || EMBBERT_ARCH_EMBEDDER_CONV
/* out[t, o] = sum_j in[t - (k-1-j), o / mult] * w[j, o] + b[o], taps oldest to newest (as reference.conv). */
static void causal_conv(const embbert_tensor_t *w, const embbert_tensor_t *b, const act_t *in, int n, int cin,
                        int cout, int k, act_t *out) {
  const int mult = cout / cin;
  int t, o, j;
  for (t = 0; t < n; t++) {
    for (o = 0; o < cout; o++) {
      float acc = 0.0f;
      for (j = 0; j < k; j++) {
        int shift = k - 1 - j;
        if (shift > t) continue;
        acc += a2f(in[(size_t)(t - shift) * cin + (size_t)(o / mult)]) *
               tval(w, (size_t)j * cout + (size_t)o, (size_t)cout);
      }
      out[(size_t)t * cout + o] = f2a(acc + tval(b, (size_t)o, (size_t)cout));
    }
  }
}

#endif

#if EMBBERT_USE_ATTENTION
static float score(const float *q, const act_t *u) {
  float acc = 0.0f;
  int j;
  for (j = 0; j < EMBBERT_HIDDEN; j++) acc += q[j] * a2f(u[j]);
  return acc / EMBBERT_SQRT_HIDDEN;
}

#endif

#if EMBBERT_NUM_LAYERS > 0
/* One EmbBERT layer: x (n x d) -> out (n x d). */
static void layer(const embbert_layer_t *P, const act_t *x, act_t *u, act_t *out, act_t *s2, int n) {
  const int d = EMBBERT_HIDDEN;
  int t, j, k;
  for (t = 0; t < n; t++) { /* u = RMSNorm(x), in place unless the residual keeps x */
    const act_t *xt = x + (size_t)t * d;
    float ms, den;
    for (j = 0; j < d; j++) { float v = a2f(xt[j]); XF[j] = v * v; }
    ms = pairwise_sum(XF, d) / (float)d;
    den = sqrtf(ms + EMBBERT_NORM_EPS);
    for (j = 0; j < d; j++) u[(size_t)t * d + j] = f2a((a2f(xt[j]) / den) * tval(&P->norm, (size_t)j, (size_t)d));
  }
#if EMBBERT_USE_ATTENTION
  for (t = 0; t < n; t++) {
    act_t *p = s2 + (size_t)t * EMBBERT_MAX_LEN;
    float m, sum = 0.0f;
    to_f32(u + (size_t)t * d, d, XF);
    dense(&P->q, XF, ROW); /* q_t, stored in the activation type, then read as f32 from XF */
    to_f32(ROW, d, XF);
    m = score(XF, u);
    for (k = 1; k < n; k++) { float s = score(XF, u + (size_t)k * d); if (s > m) m = s; }
    for (k = 0; k < n; k++) sum += expf(score(XF, u + (size_t)k * d) - m);
    for (k = 0; k < n; k++) p[k] = f2a(expf(score(XF, u + (size_t)k * d) - m) / sum);
    for (j = 0; j < d; j++) { /* P.u row into ROW (q_t is no longer needed) */
      float acc = 0.0f;
      for (k = 0; k < n; k++) acc += a2f(p[k]) * a2f(u[(size_t)k * d + j]);
      ROW[j] = f2a(acc);
    }
    to_f32(ROW, d, XF);
    dense(&P->out, XF, out + (size_t)t * d); /* a_t */
  }
#endif
#if EMBBERT_USE_CONV
  causal_conv(&P->conv_kernel, &P->conv_bias, u, n, d, EMBBERT_CONV_INNER, EMBBERT_CONV_KERNEL, s2);
  for (t = 0; t < n * EMBBERT_CONV_INNER; t++) { float v = a2f(s2[t]); s2[t] = f2a(v / (1.0f + expf(-v))); }
  for (t = 0; t < n; t++) {
    act_t *yt = out + (size_t)t * d;
    to_f32(s2 + (size_t)t * EMBBERT_CONV_INNER, EMBBERT_CONV_INNER, XF);
    dense(&P->proj, XF, ROW); /* s_t */
    for (j = 0; j < d; j++) {
#if EMBBERT_USE_ATTENTION && EMBBERT_AGGREGATION_DIFFERENCE
      yt[j] = f2a(P->lambda1 * a2f(yt[j]) - P->lambda2 * a2f(ROW[j]));
#elif EMBBERT_USE_ATTENTION
      yt[j] = f2a(a2f(yt[j]) + a2f(ROW[j]));
#else
      yt[j] = ROW[j];
#endif
    }
  }
#endif
#if EMBBERT_RESIDUAL
  for (t = 0; t < n * d; t++) out[t] = f2a(a2f(out[t]) + a2f(x[t]));
#endif
  (void)k;
  (void)P;
}

#endif

int embbert_forward(const int32_t *ids, int n, float *logits) {
  const embbert_model_t *M = &embbert_model;
  act_t *x = REGION(EMBBERT_OFF_R0), *y = REGION(EMBBERT_OFF_R1);
  int t, j;
  if (n < 1 || n > EMBBERT_MAX_LEN) return -1;
  for (t = 0; t < n; t++)
    if (ids[t] < 0 || ids[t] >= EMBBERT_VOCAB_SIZE) return -1;
  embed(ids, n, x);
#if EMBBERT_ARCH_EMBEDDER_CONV
  causal_conv(&M->conv_kernel, &M->conv_bias, x, n, EMBBERT_HIDDEN, EMBBERT_HIDDEN, EMBBERT_CONV_KERNEL, y);
  x = y;
#endif
#if EMBBERT_NUM_LAYERS > 0
  for (t = 0; t < EMBBERT_NUM_LAYERS; t++) {
    act_t *tmp;
#if EMBBERT_RESIDUAL
    act_t *u = REGION(EMBBERT_OFF_R3);
#else
    act_t *u = x;
#endif
    layer(&M->layers[t], x, u, y, REGION(EMBBERT_OFF_R2), n);
    tmp = x; x = y; y = tmp;
  }
#endif
#if EMBBERT_HEAD_CLS
  to_f32(x, EMBBERT_HIDDEN, XF);
#elif EMBBERT_HEAD_MEAN
  for (j = 0; j < EMBBERT_HIDDEN; j++) { /* mean pooling over the n real positions */
    float s = 0.0f;
    for (t = 0; t < n; t++) s += a2f(x[(size_t)t * EMBBERT_HIDDEN + j]);
    XF[j] = s / (float)n;
  }
#else
  for (j = 0; j < EMBBERT_HIDDEN; j++) { /* RMS pooling over the n real positions */
    float ss = 0.0f;
    for (t = 0; t < n; t++) { float v = a2f(x[(size_t)t * EMBBERT_HIDDEN + j]); ss += v * v; }
    XF[j] = sqrtf(ss / (float)n + 1e-12f);
  }
#endif
  dense(&M->head, XF, ROW);
  for (j = 0; j < EMBBERT_NUM_LABELS; j++) logits[j] = a2f(ROW[j]);
#if EMBBERT_LABEL_READOUT
  { /* + readout x the mean over the ids of the token table's last k columns (running sums, no arena):
       k = 1 for two classes (one feature for both logits), k = C for more (logit j reads column j) */
    const size_t r = EMBBERT_EMBED_DIM, k = EMBBERT_NUM_LABELS > 2 ? EMBBERT_NUM_LABELS : 1;
    for (j = 0; j < EMBBERT_NUM_LABELS; j++) {
      const size_t col = r - k + (k > 1 ? (size_t)j : 0);
      float s = 0.0f;
      for (t = 0; t < n; t++) s += tval(&M->token, (size_t)ids[t] * r + col, r);
      s /= (float)n;
      logits[j] += s * tval(&M->readout, (size_t)j, EMBBERT_NUM_LABELS);
    }
  }
#endif
  (void)y;
  return 0;
}

int embbert_argmax(const float *logits) {
  int i, best = 0;
  for (i = 1; i < EMBBERT_NUM_LABELS; i++)
    if (logits[i] > logits[best]) best = i;
  return best;
}
