"""Plain-NumPy EmbBERT inference from an export directory: int8 matmuls, measured working memory.

`predict(export_dir, ids)` reads only `model.npz` and `manifest.json` (written by `python -m
embbert_jax.export ... --format npz|all`) and imports nothing but NumPy; `agreement` (which runs the JAX
model for comparison) imports JAX lazily. Sequences run one at a time (batch 1, as on the target).

Numerics, chosen to be what firmware would do:
- A Dense layer whose kernel is int8 quantizes its input on the fly, symmetric int8 per row (token),
  s_x = absmax(row) / 127, multiplies int8 x int8 with int32 accumulation (`np.matmul(..., dtype=int32)`)
  and rescales, y = acc * s_x[:, None] * s_w[None, :] + b. Rows go in blocks of ROW_BLOCK, so the int32
  accumulator stays a small scratch buffer, as on a microcontroller. Float kernels use an f32 matmul.
- int8 embedding tables and conv kernels (int8_full) are dequantized one gathered row / one tap at a time.
- Everything else (RMSNorm, attention scores and softmax, conv, SiLU, the weighted difference) computes
  in f32. Activations are *stored* between steps in the policy's activation type: fp16 for "int8", f32
  for "fp32". "int8_full" prices activations at 1 byte, but int8 activation storage needs calibrated
  static ranges that the export does not carry, so here they stay fp16 (twice the estimate's bytes).
- Masks as models.py: PAD keys masked for every query, PAD query rows of the attention map all zero,
  segment ids 1 before the first [SEP] and 2 from it on (0 at PAD), the "cls" head reads position 0.

Working memory is measured two ways (`memory_profile`):
- "live": our own accounting of the activation arrays a step holds, updated at every point of the stage
  schedule that `memory.stage_activations` describes (embedder: token part + position rows + position part;
  layer: u, q and the L x L scores, then u, scores and P u, then the conv step u, a, c, ...). This is the
  quantity the memory module estimates. The int8 matmul's per-block buffers are reported as "scratch".
- "tracemalloc": the peak of every NumPy/Python allocation during one forward pass (weights already
  loaded), i.e. including f32 temporaries that a hand-written C loop would not need.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

PAD_ID, SEP_ID = 0, 4
QMAX = 127
ROW_BLOCK = 16  # rows per int8 matmul block: int32 scratch of ROW_BLOCK x out
_NEG = -1e30
_ACT_DTYPE = {4: np.float32, 2: np.float16, 1: np.float16}  # see the module docstring for 1 byte
f32 = np.float32


class LiveSet:
  """Bytes of the activation arrays held at each point of the schedule; remembers the peak and where."""

  def __init__(self) -> None:
    self.held: dict[str, int] = {}
    self.peak, self.peak_at, self.scratch_peak = 0, "", 0

  def put(self, name: str, arr: np.ndarray, where: str) -> np.ndarray:
    self.held[name] = arr.nbytes
    total = sum(self.held.values())
    if total > self.peak:
      self.peak, self.peak_at = total, f"{where}: {' + '.join(sorted(self.held))}"
    return arr

  def drop(self, *names: str) -> None:
    for n in names:
      self.held.pop(n, None)

  def scratch(self, nbytes: int) -> None:
    self.scratch_peak = max(self.scratch_peak, nbytes)


class ExportedModel:
  """The arrays of model.npz and the manifest; the forward pass of one sequence."""

  def __init__(self, export_dir: str | Path) -> None:
    d = Path(export_dir)
    self.manifest = json.loads((d / "manifest.json").read_text())
    if not (d / "model.npz").is_file():
      raise FileNotFoundError(f"{d / 'model.npz'} not found: export with --format npz or --format all")
    with np.load(d / "model.npz", allow_pickle=False) as z:
      self.arrays = {k: z[k] for k in z.files}
    self.cfg = c = self.manifest["config"]
    if c["arch"] not in ("embbert", "embedder", "embedder_conv") or c["embedder"] != "nano":
      raise NotImplementedError(f"the NumPy reference implements archs embbert, embedder and embedder_conv "
                                f"with the Nano Embedder, "
                                f"not arch {c['arch']!r} with embedder {c['embedder']!r}")
    act_bytes = self.manifest["memory_estimate"]["activation_bytes"] / self.manifest["memory_estimate"][
        "activation_values"]
    self.act = _ACT_DTYPE[int(round(act_bytes))]

  # ------------------------------------------------------------------------------------------ pieces

  def _f(self, name: str) -> np.ndarray:
    """A float tensor (fp16/fp32 storage, or int8 dequantized) as f32."""
    a = self.arrays[name]
    return a.astype(f32) * self.arrays[name + ".scale"].astype(f32) if a.dtype == np.int8 else a.astype(f32)

  def rows(self, table: str, idx: np.ndarray) -> np.ndarray:
    """Gathered embedding rows in f32 (an int8 table is dequantized per gathered row, never whole)."""
    t = self.arrays[table]
    out = t[idx].astype(f32)
    return out * self.arrays[table + ".scale"].astype(f32) if t.dtype == np.int8 else out

  def dense(self, prefix: str, x: np.ndarray, live: LiveSet) -> np.ndarray:
    """x (rows, in) -> (rows, out) stored in the activation type; int8 x int8 -> int32 for int8 kernels."""
    w = self.arrays[prefix + "/kernel"]
    bias = self.arrays.get(prefix + "/bias")
    out = np.empty((x.shape[0], w.shape[1]), self.act)
    if w.dtype == np.int8:
      s_w = self.arrays[prefix + "/kernel.scale"].astype(f32)
      for i in range(0, x.shape[0], ROW_BLOCK):
        xb = x[i:i + ROW_BLOCK].astype(f32)
        s_x = np.abs(xb).max(axis=1) / QMAX
        s_x = np.where(s_x > 0, s_x, f32(1.0)).astype(f32)
        xq = np.clip(np.rint(xb / s_x[:, None]), -QMAX, QMAX).astype(np.int8)
        acc = np.matmul(xq, w, dtype=np.int32)
        live.scratch(xq.nbytes + acc.nbytes + s_x.nbytes)
        y = acc.astype(f32) * (s_x[:, None] * s_w[None, :])
        out[i:i + ROW_BLOCK] = y + bias.astype(f32) if bias is not None else y
    else:
      y = x.astype(f32) @ w.astype(f32)
      out[...] = y + bias.astype(f32) if bias is not None else y
    return out

  def rms_norm(self, name: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(f32)
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(self.cfg["norm_eps"]))
    return (y * self._f(name + "/scale")).astype(self.act)

  def conv(self, prefix: str, u: np.ndarray) -> np.ndarray:
    """Causal depthwise conv: out[t, o] = sum_j u[t - (k-1-j), o // mult] * w[j, 0, o] + b[o]."""
    w, k = self.arrays[prefix + "/kernel"], self.arrays[prefix + "/kernel"].shape[0]
    scale = self.arrays[prefix + "/kernel.scale"].astype(f32) if w.dtype == np.int8 else None
    mult = w.shape[2] // u.shape[1]
    x = np.repeat(u, mult, axis=1) if mult > 1 else u
    length = x.shape[0]
    out = np.zeros((length, w.shape[2]), f32)
    for j in range(k):
      shift = k - 1 - j
      if shift >= length:
        continue
      tap = w[j, 0].astype(f32) * scale if scale is not None else w[j, 0].astype(f32)
      out[shift:] += x[:length - shift].astype(f32) * tap
    return (out + self._f(prefix + "/bias")).astype(self.act)

  # ----------------------------------------------------------------------------------------- forward

  def forward(self, ids_L: np.ndarray, live: LiveSet | None = None) -> np.ndarray:
    """Logits (C,) of one sequence of ids (length <= max_len), in f32."""
    c, live = self.cfg, live or LiveSet()
    ids_L = np.asarray(ids_L)
    length, act = ids_L.shape[0], self.act
    mask_L = ids_L != PAD_ID
    seg_L = np.where(ids_L == PAD_ID, 0, np.where(np.cumsum(ids_L == SEP_ID) > 0, 2, 1))
    e = "encoder/embedder"
    tok_rows = live.put("tok_rows", self.rows(f"{e}/token/embedding", ids_L).astype(act), "embedder")
    x = live.put("tok", self.dense(f"{e}/token_proj", tok_rows, live), "embedder")
    live.drop("tok_rows")
    pos_rows = live.put("pos_rows", self.rows(f"{e}/position/embedding", np.arange(length)).astype(act),
                        "embedder")
    pos = live.put("pos", self.dense(f"{e}/position_proj", pos_rows, live), "embedder")
    live.drop("pos_rows")
    # In place: one fp16 add rounds exactly as an f32 add followed by a cast would.
    np.add(x, pos, out=x)
    live.drop("pos")
    seg = live.put("seg", self.rows(f"{e}/segment/embedding", seg_L).astype(act), "embedder")
    np.add(x, seg, out=x)
    live.drop("seg")
    live.held["x"] = live.held.pop("tok")
    keys_L = mask_L | bool(c.get("attend_to_pad", False))  # see models.Encoder
    if c["arch"] == "embedder_conv":  # the baseline's causal conv over the embeddings (input and output live)
      x = live.put("x_conv", self.conv("encoder/conv", x), "conv")
      live.drop("x_conv")
      live.held["x"] = x.nbytes
    for i in range(c["num_layers"] if c["arch"] == "embbert" else 0):
      x = self.layer(f"encoder/layer_{i}", x, keys_L, live)
    return self.head(x, mask_L, live, ids_L)

  def layer(self, p: str, x: np.ndarray, mask_L: np.ndarray, live: LiveSet) -> np.ndarray:
    c, act, where = self.cfg, self.act, p.split("/")[-1]
    u = live.put("u", self.rms_norm(f"{p}/norm", x), where)
    if not c["residual"]:
      live.drop("x")
    a = s = None
    if c["use_attention"]:
      q = live.put("q", self.dense(f"{p}/attention/q", u, live), where)
      scores = (q.astype(f32) @ u.astype(f32).T) / f32(math.sqrt(c["hidden"]))
      live.put("scores", scores.astype(act), where)
      live.drop("q")
      scores = np.where(mask_L[None, :], scores, f32(_NEG))
      probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
      probs = (probs / probs.sum(axis=-1, keepdims=True)) * mask_L[:, None]
      probs = live.put("scores", probs.astype(act), where)  # the probabilities replace the scores
      pu = live.put("pu", (probs.astype(f32) @ u.astype(f32)).astype(act), where)
      live.drop("scores")
      a = live.put("a", self.dense(f"{p}/attention/out", pu, live), where)
      live.drop("pu")
    if c["use_conv"]:
      cv = live.put("c", self.conv(f"{p}/conv_branch/conv", u), where)
      live.drop("u")
      cv = cv.astype(f32)
      cv = live.put("c", (cv / (1.0 + np.exp(-cv))).astype(act), where)  # SiLU
      s = live.put("s", self.dense(f"{p}/conv_branch/proj", cv, live), where)
      live.drop("c")
    live.drop("u")
    # The output overwrites a branch's buffer (a, else s): the layer never holds a third L x d tensor here.
    y, name = (a, "a") if a is not None else (s, "s")
    if a is not None and s is not None:
      if c["aggregation"] == "difference":
        g = lambda n: self._f(f"{p}/aggregate/{n}")
        lam1, lam2 = np.exp(g("lambda_q1") @ g("lambda_k1")), np.exp(g("lambda_q2") @ g("lambda_k2"))
        y[...] = lam1 * a.astype(f32) - lam2 * s.astype(f32)
      else:
        y[...] = a.astype(f32) + s.astype(f32)
    if c["residual"]:
      y[...] = y.astype(f32) + x.astype(f32)
    live.drop("a", "s", "x")
    live.put("x", y, where)
    return y

  def head(self, x: np.ndarray, mask_L: np.ndarray, live: LiveSet, ids_L: np.ndarray) -> np.ndarray:
    if self.cfg["head"] == "cls":
      pooled = x[:1]
    else:
      m = (mask_L[:, None] | bool(self.cfg.get("pool_over_pad", False))).astype(f32)  # see models.rms_pool
      if self.cfg["head"] == "mean_pool":
        pooled = (x.astype(f32) * m).sum(0, keepdims=True) / max(m.sum(), 1.0)
      else:
        pooled = np.sqrt((x.astype(f32) ** 2 * m).sum(0, keepdims=True) / max(m.sum(), 1.0) + 1e-12)
    live.put("pooled", pooled, "head")
    live.drop("x")
    logits = self.dense("head/dense", pooled, live).astype(f32)[0]
    if self.cfg.get("label_readout", False):  # running sums in order, as the C runtime's (no arena value)
      c = int(self.cfg["num_labels"])
      k = 1 if c <= 2 else c  # configs.label_width (this module imports nothing of the package)
      rows = self.rows("encoder/embedder/token/embedding", ids_L[mask_L])[:, -k:]
      total = np.zeros(k, f32)
      for v in rows:
        total = (total + v.astype(f32)).astype(f32)
      logits = logits + (total / f32(max(int(mask_L.sum()), 1))).astype(f32) * self._f("head/readout")
    live.put("logits", logits, "head")
    live.drop("pooled", "logits")
    return logits


def _model(export_dir: str | Path | ExportedModel) -> ExportedModel:
  return export_dir if isinstance(export_dir, ExportedModel) else ExportedModel(export_dir)


def predict(export_dir: str | Path | ExportedModel, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(labels (B,), logits (B, C)) for ids (B, L'), L' <= max_len; labels = argmax (regression: the value)."""
  m = _model(export_dir)
  ids = np.atleast_2d(np.asarray(ids))
  if ids.shape[1] > m.cfg["max_len"]:
    raise ValueError(f"sequences of {ids.shape[1]} ids exceed max_len {m.cfg['max_len']}")
  logits = np.stack([m.forward(row) for row in ids]) if len(ids) else np.zeros((0, m.cfg["num_labels"]), f32)
  labels = logits.argmax(-1) if m.cfg["num_labels"] > 1 else logits[:, 0]
  return labels, logits


def memory_profile(export_dir: str | Path | ExportedModel, seed: int = 0) -> dict[str, Any]:
  """Working memory of one inference at batch 1 and full length L (no padding), both measures."""
  m = _model(export_dir)
  c = m.cfg
  ids = np.random.RandomState(seed).randint(5, c["vocab_size"], c["max_len"])
  ids[0] = 2  # [CLS]
  live = LiveSet()
  tracemalloc.start()
  try:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    m.forward(ids, live)
    traced_peak = tracemalloc.get_traced_memory()[1] - base
  finally:
    tracemalloc.stop()
  est = m.manifest["memory_estimate"]
  return {"policy": m.manifest["policy"], "activation_dtype": np.dtype(m.act).name,
          "live_peak_bytes": live.peak, "live_peak_at": live.peak_at, "scratch_peak_bytes": live.scratch_peak,
          "tracemalloc_peak_bytes": int(traced_peak), "estimate_activation_bytes": est["activation_bytes"],
          "estimate_activation_values": est["activation_values"],
          "live_peak_values": live.peak // np.dtype(m.act).itemsize}


def agreement(export_dir: str | Path | ExportedModel, params: Any, cfg: Any, ids: np.ndarray,
              batch_size: int = 64) -> float:
  """Fraction of sequences whose reference label equals the JAX model's (run on `params`) argmax label."""
  import jax
  from embbert_jax import models
  if cfg.num_labels < 2:
    raise ValueError("agreement compares labels: it needs a classifier (num_labels >= 2)")
  model = models.build_model(cfg)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  ids = np.asarray(ids, np.int32)
  jax_labels = np.concatenate([np.asarray(apply(params, ids[i:i + batch_size])).argmax(-1)
                               for i in range(0, len(ids), batch_size)])
  ref_labels, _ = predict(export_dir, ids)
  return float(np.mean(ref_labels == jax_labels))
