"""Flax (linen) modules: EmbBERT, its components and the paper's baselines.

Every module reads one frozen `configs.ModelConfig` (`build_model` freezes a ConfigDict). Parameters are
plain pytrees of the layout

    {"encoder": {"embedder": ..., "layer_0": ..., ...}, "head": {...}}

so that a pre-trained encoder is carried into a classifier by swapping `params["encoder"]`, and so that
`memory.param_shapes(cfg)` can list every leaf from the config alone (a test checks both agree).

Shapes are in names: `x_BxLxD` is (batch, length, hidden). Initialisation follows the reference code
(spec 1.5): embedding tables N(0, 1) with the PAD row zeroed, Dense/Conv as PyTorch defaults
(U(+-1/sqrt(fan_in)) for kernels and biases), norm scales 1, lambda vectors N(0, 0.1^2); mamba's
`dt_proj` bias as the Mamba reference (`mamba_dt_bias_init`). Unlike PyTorch's
`padding_idx`, the PAD row is not frozen; nothing reads it at real positions, so it does not matter.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from embbert_jax import configs
from embbert_jax.configs import PAD_ID, SEP_ID
from embbert_jax.conv import causal_depthwise_conv

Array = jax.Array
_NEG = -1e30  # finite "minus infinity": an all-masked row softmaxes to uniform, never NaN


# --------------------------------------------------------------------------------------------- helpers


def torch_kernel_init():
  """PyTorch's default Linear/Conv kernel init: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def table_init(zero_pad_row: bool):
  """N(0, 1) embedding table, optionally with row PAD_ID zeroed (as `nn.Embedding(padding_idx=0)`)."""
  def init(key, shape, dtype=jnp.float32):
    table = jax.random.normal(key, shape, dtype)
    return table.at[PAD_ID].set(0.0) if zero_pad_row else table
  return init


def dense(cfg, features: int, fan_in: int, name: str, use_bias: bool = True) -> nn.Dense:
  """A Dense layer with the reference init and the config's compute/param dtypes."""
  return nn.Dense(features, use_bias=use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  kernel_init=torch_kernel_init(), bias_init=torch_bias_init(fan_in), name=name)


def rms_norm(cfg, name: str) -> nn.RMSNorm:
  # Flax reduces in float32 whatever the compute dtype (force_float32_reductions).
  return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)


def dropout(module: nn.Module, x: Array, rate: float, deterministic: bool) -> Array:
  """Inverted dropout that draws 16 random bits per element instead of a float: each 32-bit threefry
  word serves two elements (kept where its half >= round(rate * 2^16), scaled by 1 / the exact keep
  rate), half the random-number work of `nn.Dropout`, whose threefry draws measured ~10 % of the
  headline train step on CPU. Statistically the same dropout (the rate is rounded to 1/65536); not the
  same mask as `nn.Dropout` for a given key. Uses the module's "dropout" rng stream."""
  if deterministic or rate == 0.0:
    return x
  cut = round(rate * 65536)
  keep = (65536 - cut) / 65536
  rng = module.make_rng("dropout")
  if x.shape[-1] % 2:
    mask = jax.random.bits(rng, x.shape, jnp.uint32) >> 16 >= cut
  else:
    words = jax.random.bits(rng, x.shape[:-1] + (x.shape[-1] // 2,), jnp.uint32)
    mask = jnp.concatenate([(words & 0xFFFF) >= cut, (words >> 16) >= cut], axis=-1)  # bool: 1 byte kept
  # A product, not a select: its gradient is one fused multiply, with no zeros tensor materialised.
  return x * jnp.where(mask, 1.0 / keep, 0.0).astype(x.dtype)


def pad_mask(ids_BxL: Array) -> Array:
  """True at real tokens, False at [PAD]."""
  return ids_BxL != PAD_ID


def segment_ids(ids_BxL: Array) -> Array:
  """Spec 1.1: 1 before the first [SEP], 2 from the first [SEP] on, 0 at [PAD]."""
  after_sep = jnp.cumsum(ids_BxL == SEP_ID, axis=-1) > 0
  seg = jnp.where(after_sep, 2, 1)
  return jnp.where(ids_BxL == PAD_ID, 0, seg).astype(jnp.int32)


def key_bias(mask_BxL: Array) -> Array:
  """(B, L) f32: 0 at real keys, -1e30 at PAD keys, added to the scores. An additive mask has the
  identity as its gradient, so no (L x L) select and zeros tensor enter the backward pass."""
  return jnp.where(mask_BxL, 0.0, _NEG).astype(jnp.float32)


def masked_softmax(scores_BxHxLxL: Array, mask_BxL: Array) -> Array:
  """Softmax over keys that are not PAD (`key_bias`); rows of PAD queries are all zero (spec 1.2).
  Computed in f32."""
  scores = scores_BxHxLxL.astype(jnp.float32) + key_bias(mask_BxL)[:, None, None, :]
  return jax.nn.softmax(scores, axis=-1) * mask_BxL[:, None, :, None]


# ------------------------------------------------------------------------------------------ embedders


class NanoEmbedder(nn.Module):
  """Spec 1.1: token and position tables of width r, each projected to d; a full-width segment table."""
  cfg: Any

  @nn.compact
  def __call__(self, ids_BxL: Array) -> Array:
    c = self.cfg
    length = ids_BxL.shape[-1]
    emb = lambda n, f, name, zero: nn.Embed(n, f, dtype=c.dtype, param_dtype=c.param_dtype,
                                            embedding_init=table_init(zero), name=name)
    tok_BxLxR = emb(c.vocab_size, c.embed_dim, "token", True)(ids_BxL)
    pos_LxR = emb(c.max_len, c.embed_dim, "position", False)(jnp.arange(length))
    seg_BxLxD = emb(3, c.hidden, "segment", False)(segment_ids(ids_BxL))
    tok_BxLxD = dense(c, c.hidden, c.embed_dim, "token_proj", use_bias=False)(tok_BxLxR)
    pos_LxD = dense(c, c.hidden, c.embed_dim, "position_proj", use_bias=False)(pos_LxR)
    return tok_BxLxD + pos_LxD[None] + seg_BxLxD


class StandardEmbedder(nn.Module):
  """Token, position and segment tables at full width d, summed (no norm: the spec's 2 MB sizing)."""
  cfg: Any

  @nn.compact
  def __call__(self, ids_BxL: Array) -> Array:
    c = self.cfg
    emb = lambda n, name, zero: nn.Embed(n, c.hidden, dtype=c.dtype, param_dtype=c.param_dtype,
                                         embedding_init=table_init(zero), name=name)
    tok = emb(c.vocab_size, "token", True)(ids_BxL)
    pos = emb(c.max_len, "position", False)(jnp.arange(ids_BxL.shape[-1]))
    seg = emb(3, "segment", False)(segment_ids(ids_BxL))
    return tok + pos[None] + seg


def make_embedder(cfg, name: str = "embedder") -> nn.Module:
  return NanoEmbedder(cfg, name=name) if cfg.embedder == "nano" else StandardEmbedder(cfg, name=name)


# ------------------------------------------------------------------------------------------ components


class CausalDepthwiseConv(nn.Module):
  """Params `kernel` (k, 1, out) and `bias` (out,), PyTorch default init (fan_in = k)."""
  cfg: Any
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, x_BxLxC: Array) -> Array:
    c = self.cfg
    kernel = self.param("kernel", torch_kernel_init(), (self.kernel_size, 1, self.features), c.param_dtype)
    bias = self.param("bias", torch_bias_init(self.kernel_size), (self.features,), c.param_dtype)
    return causal_depthwise_conv(x_BxLxC.astype(c.dtype), kernel.astype(c.dtype), bias.astype(c.dtype),
                                 c.conv_impl)


class EfficientAttention(nn.Module):
  """Single head, keys = values = the input (no K/V projections): Dense(softmax(q u^T / sqrt d) u).

  The softmax is normalised after the value product: a = (dropout(exp(s - max)) u) / sum(exp(s - max)),
  which is dropout(softmax(s)) u exactly (dropout and the product are linear), with the division on
  (L x d) instead of (L x L) and one (L x L) pass fewer forward and backward: the attention block's
  forward + backward measured 1.14x (d = 128) and 1.57x (d = 64) faster on CPU. Masks as spec 1.2: PAD
  keys get an additive -1e30 (every query), PAD query rows of the output are zero; a row whose keys are
  all PAD stays finite (uniform weights, then zeroed)."""
  cfg: Any

  @nn.compact
  def __call__(self, u_BxLxD: Array, mask_BxL: Array, deterministic: bool) -> Array:
    c = self.cfg
    q_BxLxD = dense(c, c.hidden, c.hidden, "q")(u_BxLxD)
    # The 1/sqrt(d) scale on q (L x d), not on the scores (L x L): the same product, and on CPU XLA
    # otherwise materialises an (L x L) broadcast of the constant for its fused matmul every step.
    scores_BxLxL = jnp.einsum("bqd,bkd->bqk", q_BxLxD * (1.0 / math.sqrt(c.hidden)), u_BxLxD)
    scores_BxLxL = scores_BxLxL.astype(jnp.float32) + key_bias(mask_BxL)[:, None, :]
    top_BxLx1 = lax.stop_gradient(scores_BxLxL.max(-1, keepdims=True))
    weights_BxLxL = jnp.exp(scores_BxLxL - top_BxLx1)
    total_BxLx1 = weights_BxLxL.sum(-1, keepdims=True)
    weights_BxLxL = dropout(self, weights_BxLxL, c.dropout, deterministic)
    a_BxLxD = jnp.einsum("bqk,bkd->bqd", weights_BxLxL.astype(u_BxLxD.dtype), u_BxLxD)
    scale_BxLx1 = mask_BxL[:, :, None] / total_BxLx1  # 1 / the softmax's sum; 0 on PAD query rows
    a_BxLxD = (a_BxLxD.astype(jnp.float32) * scale_BxLx1).astype(u_BxLxD.dtype)
    return dense(c, c.hidden, c.hidden, "out")(a_BxLxD)


class MultiHeadAttention(nn.Module):
  """Standard multi-head self-attention with Q, K, V and output projections (all with bias)."""
  cfg: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array, mask_BxL: Array, deterministic: bool) -> Array:
    c = self.cfg
    b, length, d = x_BxLxD.shape
    h = c.num_heads
    split = lambda t: t.reshape(b, length, h, d // h)
    q, k, v = (split(dense(c, d, d, n)(x_BxLxD)) for n in ("q", "k", "v"))
    scores_BxHxLxL = jnp.einsum("bqhf,bkhf->bhqk", q, k) / math.sqrt(d // h)
    probs = nn.Dropout(c.dropout)(masked_softmax(scores_BxHxLxL, mask_BxL), deterministic=deterministic)
    out_BxLxHxF = jnp.einsum("bhqk,bkhf->bqhf", probs.astype(v.dtype), v)
    return dense(c, d, d, "out")(out_BxLxHxF.reshape(b, length, d))


class ConvBranch(nn.Module):
  """Branch B of the EmbBERT layer: Dense(silu(causal depthwise conv d -> d_i))."""
  cfg: Any

  @nn.compact
  def __call__(self, u_BxLxD: Array) -> Array:
    c = self.cfg
    d_i = configs.conv_inner(c)
    c_BxLxI = CausalDepthwiseConv(c, d_i, c.conv_kernel, name="conv")(u_BxLxD)
    return dense(c, c.hidden, d_i, "proj")(nn.silu(c_BxLxI))


class WeightedDifference(nn.Module):
  """x = exp(<l_q1, l_k1>) * a - exp(<l_q2, l_k2>) * s, with four learnable d-vectors ~ N(0, 0.1^2)."""
  cfg: Any

  @nn.compact
  def __call__(self, a_BxLxD: Array, s_BxLxD: Array) -> Array:
    c = self.cfg
    vec = lambda n: self.param(n, nn.initializers.normal(0.1), (c.hidden,), c.param_dtype)
    lam1 = jnp.exp(jnp.dot(vec("lambda_q1"), vec("lambda_k1")))
    lam2 = jnp.exp(jnp.dot(vec("lambda_q2"), vec("lambda_k2")))
    return (lam1 * a_BxLxD - lam2 * s_BxLxD).astype(a_BxLxD.dtype)


# ---------------------------------------------------------------------------------------------- layers


class EmbBertLayer(nn.Module):
  """Spec 1.3: RMSNorm, then efficient attention and the conv branch, combined by a weighted difference.

  The reference has no residual path; `cfg.residual` adds one, and the other ablation switches drop a
  branch (`use_attention`, `use_conv`) or replace the difference by a plain sum (`aggregation="sum"`).
  """
  cfg: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array, mask_BxL: Array, deterministic: bool) -> Array:
    c = self.cfg
    u = rms_norm(c, "norm")(x_BxLxD)
    a = EfficientAttention(c, name="attention")(u, mask_BxL, deterministic) if c.use_attention else None
    s = ConvBranch(c, name="conv_branch")(u) if c.use_conv else None
    if a is None or s is None:
      y = a if s is None else s
    elif c.aggregation == "difference":
      y = WeightedDifference(c, name="aggregate")(a, s)
    else:
      y = a + s
    return x_BxLxD + y if c.residual else y


class TransformerLayer(nn.Module):
  """Post-LN BERT layer: LN(x + drop(MHA(x))), then LN(h + drop(W2 relu(W1 h)))."""
  cfg: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array, mask_BxL: Array, deterministic: bool) -> Array:
    c = self.cfg
    drop = lambda t: nn.Dropout(c.dropout)(t, deterministic=deterministic)
    ln = lambda n: nn.LayerNorm(epsilon=c.norm_eps, dtype=c.dtype, param_dtype=c.param_dtype, name=n)
    h = ln("norm1")(x_BxLxD + drop(MultiHeadAttention(c, name="attention")(x_BxLxD, mask_BxL, deterministic)))
    f = dense(c, c.hidden, c.ffn_dim, "ffn_out")(nn.relu(dense(c, c.ffn_dim, c.hidden, "ffn_in")(h)))
    return ln("norm2")(h + drop(f))


class EfficientTransformerLayer(nn.Module):
  """nanobert_efficient as the authors build it: u = RMSNorm(x), h = u + EffAttn(u), v = RMSNorm(h),
  out = v + W2 silu(W1 v).

  Each norm replaces the residual stream by its normalised value before the residual is added (their
  layer returns `out(ctx) + x` on the normalised x), so this is not pre-LN x + f(LN(x)): no un-normalised
  path runs from the embedder to the output. The published 87.04 TinyNLP comes from this layer.
  """
  cfg: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array, mask_BxL: Array, deterministic: bool) -> Array:
    c = self.cfg
    u = rms_norm(c, "norm1")(x_BxLxD)
    h = u + EfficientAttention(c, name="attention")(u, mask_BxL, deterministic)
    v = rms_norm(c, "norm2")(h)
    return v + dense(c, c.hidden, c.ffn_dim, "ffn_out")(nn.silu(dense(c, c.ffn_dim, c.hidden, "ffn_in")(v)))


MAMBA_DT_MIN, MAMBA_DT_MAX, MAMBA_DT_FLOOR = 1e-3, 1e-1, 1e-4  # the Mamba reference's defaults


def mamba_dt_bias_init(dt_min: float = MAMBA_DT_MIN, dt_max: float = MAMBA_DT_MAX,
                       floor: float = MAMBA_DT_FLOOR):
  """The Mamba reference's `dt_proj` bias: softplus(bias) = dt, log-uniform in [dt_min, dt_max] (at
  least `floor`), so each channel starts with its own time scale; a plain U(+-1/sqrt(fan_in)) bias would
  start every step near softplus(0) = 0.69, which forgets the past within a few tokens."""
  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, jnp.float32)
    dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # inverse softplus
  return init


def selective_scan(u_BxLxI: Array, delta_BxLxI: Array, a_IxN: Array, b_BxLxN: Array, c_BxLxN: Array,
                   d_I: Array) -> Array:
  """Mamba's selective SSM, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t + D u_t.

  A parallel `lax.associative_scan` over time (log-depth on accelerators); it holds the (L, d_inner,
  d_state) decay and input terms at once, which `memory.activation_values` counts.
  """
  f32 = jnp.float32
  decay_BxLxIxN = jnp.exp(delta_BxLxI.astype(f32)[..., None] * a_IxN.astype(f32)[None, None])
  drive_BxLxIxN = (delta_BxLxI * u_BxLxI).astype(f32)[..., None] * b_BxLxN.astype(f32)[:, :, None, :]

  def combine(left, right):
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2

  _, h_BxLxIxN = lax.associative_scan(combine, (decay_BxLxIxN, drive_BxLxIxN), axis=1)
  y = jnp.einsum("blin,bln->bli", h_BxLxIxN, c_BxLxN.astype(f32))
  return (y + u_BxLxI.astype(f32) * d_I.astype(f32)[None, None]).astype(u_BxLxI.dtype)


class MambaBlock(nn.Module):
  """The Mamba (S6) block: in_proj -> causal conv + silu -> selective scan, gated by silu(z) -> out_proj."""
  cfg: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array) -> Array:
    c = self.cfg
    d, di, n, r = c.hidden, configs.mamba_inner(c), c.d_state, c.dt_rank
    xz = dense(c, 2 * di, d, "in_proj", use_bias=False)(x_BxLxD)
    x, z = jnp.split(xz, 2, axis=-1)
    u = nn.silu(CausalDepthwiseConv(c, di, c.d_conv, name="conv")(x))
    dbc = dense(c, r + 2 * n, di, "x_proj", use_bias=False)(u)
    dt, b, cc = jnp.split(dbc, [r, r + n], axis=-1)
    # Kernel U(+-1/sqrt(dt_rank)): the reference's dt_init="random" with dt_scale 1 (= the torch default).
    dt_proj = nn.Dense(di, dtype=c.dtype, param_dtype=c.param_dtype, kernel_init=torch_kernel_init(),
                       bias_init=mamba_dt_bias_init(), name="dt_proj")
    delta = nn.softplus(dt_proj(dt))
    a_log = self.param("A_log", lambda k, s: jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32),
                                                                       s)), (di, n))
    d_skip = self.param("D", nn.initializers.ones, (di,), c.param_dtype)
    y = selective_scan(u, delta, -jnp.exp(a_log), b, cc, d_skip)
    return dense(c, d, di, "out_proj", use_bias=False)(y * nn.silu(z))


class MambaLayer(nn.Module):
  """x + MambaBlock(RMSNorm(x)). Causal, so real positions never read the right padding."""
  cfg: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array, mask_BxL: Array, deterministic: bool) -> Array:
    del mask_BxL, deterministic
    return x_BxLxD + MambaBlock(self.cfg, name="mixer")(rms_norm(self.cfg, "norm")(x_BxLxD))


_LAYERS = {"embbert": EmbBertLayer, "bert": TransformerLayer, "nanobert": TransformerLayer,
           "nanobert_efficient": EfficientTransformerLayer, "mamba": MambaLayer}


class Encoder(nn.Module):
  """Embedder, then N layers of the config's architecture (no final norm). Returns (B, L, d)."""
  cfg: Any

  @nn.compact
  def __call__(self, ids_BxL: Array, mask_BxL: Array | None = None, train: bool = False) -> Array:
    c = self.cfg
    mask = pad_mask(ids_BxL) if mask_BxL is None else mask_BxL
    if c.attend_to_pad:  # the authors' bert / nanobert: no padding mask, every position is a key
      mask = jnp.ones_like(mask)
    x = make_embedder(c)(ids_BxL)
    if c.arch == "embedder_conv":
      x = CausalDepthwiseConv(c, c.hidden, c.conv_kernel, name="conv")(x)
    layer_cls = _LAYERS.get(c.arch)
    for i in range(c.num_layers if layer_cls else 0):
      x = layer_cls(c, name=f"layer_{i}")(x, mask, not train)
    return x


# ----------------------------------------------------------------------------------------------- heads


def rms_pool(x_BxLxD: Array, mask_BxL: Array) -> Array:
  """Per channel sqrt(mean over the positions in `mask_BxL` of x^2). Given the padding mask, padding
  does not dilute it; given all True (`pool_over_pad`, the authors' RMSClassifier), it averages over the
  padded batch width, so the logits depend on how much padding the batch has."""
  m = mask_BxL[..., None].astype(jnp.float32)
  mean_sq = jnp.sum(jnp.square(x_BxLxD.astype(jnp.float32)) * m, axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
  return jnp.sqrt(mean_sq + 1e-12)


def mean_pool(x_BxLxD: Array, mask_BxL: Array) -> Array:
  """Per channel the mean over the positions in `mask_BxL` (f32)."""
  m = mask_BxL[..., None].astype(jnp.float32)
  return jnp.sum(x_BxLxD.astype(jnp.float32) * m, axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


def label_feature(token_table_VxR: Array, ids_BxL: Array, mask_BxL: Array, k: int = 1) -> Array:
  """(B, k) f32: the mean over a text's real positions of the token table's last k columns
  (`label_readout`; k = configs.label_width)."""
  cols_BxLxk = jnp.take(token_table_VxR[:, -k:], ids_BxL, axis=0)
  return mean_pool(cols_BxLxk, mask_BxL)


class ClassifierHead(nn.Module):
  """Dense(d -> C) on position 0 ("cls"), on the RMS-pooled ("rms_pool") or the mean-pooled ("mean_pool")
  sequence; with `label_readout`, plus a per-class weight (`readout`, init 0) times `label_Bxk` (k = 1: one
  feature for every logit; k = C: logit c's own)."""
  cfg: Any

  @nn.compact
  def __call__(self, h_BxLxD: Array, mask_BxL: Array, label_Bxk: Array | None = None) -> Array:
    c = self.cfg
    if c.head == "cls":
      pooled = h_BxLxD[:, 0]
    else:
      pool_mask = jnp.ones_like(mask_BxL) if c.pool_over_pad else mask_BxL
      pool = rms_pool if c.head == "rms_pool" else mean_pool
      pooled = pool(h_BxLxD, pool_mask).astype(h_BxLxD.dtype)
    logits = dense(c, c.num_labels, c.hidden, "dense")(pooled).astype(jnp.float32)
    if c.label_readout:
      w = self.param("readout", nn.initializers.zeros_init(), (c.num_labels,), jnp.dtype(c.param_dtype))
      logits = logits + label_Bxk * w.astype(jnp.float32)[None, :]
    return logits


class PretrainHead(nn.Module):
  """MLM Dense(d -> V) with bias (not tied), NSP Dense(d -> 2) at position 0.

  The MLM head runs at every position, or only at `positions_BxP` when given: the loss reads the masked
  positions alone, and skipping the other 85 % saves most of the head's V-wide matmul.
  """
  cfg: Any

  @nn.compact
  def __call__(self, h_BxLxD: Array, positions_BxP: Array | None = None) -> tuple[Array, Array]:
    c = self.cfg
    h_mlm = h_BxLxD if positions_BxP is None else jnp.take_along_axis(h_BxLxD, positions_BxP[..., None], 1)
    mlm = dense(c, c.vocab_size, c.hidden, "mlm")(h_mlm).astype(jnp.float32)
    nsp = dense(c, 2, c.hidden, "nsp")(h_BxLxD[:, 0]).astype(jnp.float32)
    return mlm, nsp


class Classifier(nn.Module):
  """Encoder + classification/regression head. Returns f32 logits (B, C)."""
  cfg: Any

  @nn.compact
  def __call__(self, ids_BxL: Array, mask_BxL: Array | None = None, train: bool = False) -> Array:
    mask = pad_mask(ids_BxL) if mask_BxL is None else mask_BxL
    encoder = Encoder(self.cfg, name="encoder")
    h = encoder(ids_BxL, mask, train)
    label = None
    if self.cfg.label_readout:  # the encoder's own token table, read after it has run (or been initialised)
      label = label_feature(encoder.variables["params"]["embedder"]["token"]["embedding"], ids_BxL, mask,
                            configs.label_width(self.cfg.num_labels))
    return ClassifierHead(self.cfg, name="head")(h, mask, label)


class Pretrainer(nn.Module):
  """Encoder + MLM and NSP heads. Returns (mlm_logits (B, L or P, V), nsp_logits (B, 2)), both f32."""
  cfg: Any

  @nn.compact
  def __call__(self, ids_BxL: Array, mask_BxL: Array | None = None, train: bool = False,
               positions_BxP: Array | None = None):
    mask = pad_mask(ids_BxL) if mask_BxL is None else mask_BxL
    h = Encoder(self.cfg, name="encoder")(ids_BxL, mask, train)
    return PretrainHead(self.cfg, name="head")(h, positions_BxP)


def build_model(cfg, task: str = "classify") -> nn.Module:
  """The module for `task` ("classify" or "pretrain") from a model config (ConfigDict or ModelConfig)."""
  cfg = configs.ModelConfig.from_dict(cfg)
  if task == "classify":
    return Classifier(cfg)
  if task == "pretrain":
    return Pretrainer(cfg)
  raise ValueError(f"task must be 'classify' or 'pretrain', not {task!r}")


def init_params(cfg, rng: Array, task: str = "classify", batch: int = 1) -> Any:
  """Initialised parameters (a plain nested dict) for `task`."""
  ids = jnp.full((batch, cfg.max_len), configs.CLS_ID, jnp.int32)
  return build_model(cfg, task).init({"params": rng}, ids)["params"]
