"""Post-training int8 quantization (PTQ) and quantization-aware adaptation (issue 6).

Storage format. Under a `memory.DtypePolicy`, every parameter tensor belongs to one class
(`memory.classify`: Dense kernel, embedding table, conv kernel, other). A class the policy prices at one
byte is stored as int8 values `q` plus one fp16 scale per channel of the last axis (a Dense kernel (in, out)
gets one per output channel, a conv kernel (k, 1, out) one per output channel, an embedding table (n, f)
one per column), symmetric, x ~= q * scale. Every other class is stored in the float type of its byte
price (2: fp16, 4: fp32). The decision "which classes are int8" is made only in `memory` (POLICIES and
`is_quantized`), so the exported bytes equal `memory.estimate(cfg, policy).weight_bytes` by construction.

The quantizer: scale = absmax / 127 per channel, rounded *up* to an fp16 value before the values are
rounded with it, q = round(x / scale) in [-127, 127] (the symmetric narrow range of TFLite's int8 weights
and CMSIS-NN: -q is always representable). Because the stored fp16 scale is the one the values were
rounded with, the stored pair reproduces x within half a step: |x - q * scale| <= scale / 2.

Library decision: qwix 0.1.8 and aqtp 0.9.0 both install against the pins (jax 0.10.2, flax 0.12.8)
without changing them (checked with `pip install --dry-run`), yet neither is used:
- Both quantize by *injection*: they replace the contractions (`lax.dot_general`, conv) while a model
  runs, and qwix rewrites the linen/NNX module (`quantize_model`). What the project needs is a stored
  format for an exporter and a plain-NumPy/firmware consumer, with embedding tables included (int8_full);
  a table lookup is a gather, which their PTQ paths leave in float (qwix covers `take` only in its
  TFLite-conversion provider).
- The part that fits, qwix's tensor quantizer (`qwix.quantize(x, int8, channelwise_axes=..., scale_dtype=
  float16)`), computes the scale in float32 and casts it to fp16 afterwards, so the stored scale is not
  the one the values were rounded with: measured max |x - q*s16| = 0.562 * s16 on a N(0, 1) tensor, above
  the half step guaranteed here. It also rounds to [-128, 127] (bound 127.5), not the symmetric range.
- Their LoRA and QAT (`LoraProvider`, `QtProvider`) wrap the module as well, so they need the model
  object and its call. `adapt` takes an opaque `loss_fn(params, batch, rng)` (the one train.py uses), so
  adapters and fake-quant live in parameter space: x (W + A B) == x W + x A B, and the straight-through
  estimator is the one line x + stop_gradient(q(x) - x).
The hand-written quantizer is the ~15 lines of `quantize_tensor`.

Adaptation after PTQ (`adapt`): "lora" (the paper: r=8, lr 1e-4) trains rank-r adapters A (in, r), B (r, out)
on every Dense kernel over the frozen dequantized int8 base, W = deq(q(W0)) + (alpha / r) A B, B = 0 at
start, so step 0 is exactly the PTQ model; "ste" fine-tunes all parameters through the straight-through
fake-quant of the policy (quantized classes on the int8 grid, the rest rounded to their float type).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from embbert_jax import memory

QMAX = 127  # symmetric narrow range [-127, 127]
_MIN_SCALE = float(np.finfo(np.float16).tiny)  # smallest normal fp16: an all-zero channel still gets a scale
_FLOAT_OF_BYTES = {2: "float16", 4: "float32"}


class QTensor(NamedTuple):
  """int8 values and one fp16 scale per channel of the last axis: x ~= q * scale."""
  q: Any  # int8, the tensor's shape
  scale: Any  # float16, (shape[-1],)


@flax.struct.dataclass
class QuantizedParams:
  """A parameter pytree as stored under `policy`: QTensor leaves for int8 classes, float arrays otherwise."""
  tree: Any
  policy: str = flax.struct.field(pytree_node=False)


def _keys(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in path)


def tensor_format(path: tuple[str, ...], shape: tuple[int, ...], policy: str | memory.DtypePolicy) -> str:
  """How `policy` stores the tensor at `path`: "int8" (with scales), "float16" or "float32"."""
  pol = memory.get_policy(policy)
  kind = memory.classify(tuple(path), tuple(shape))
  if memory.is_quantized(pol, kind):  # the one rule, shared with the byte count
    return "int8"
  nbytes = pol.bytes_for(kind)
  if nbytes not in _FLOAT_OF_BYTES:
    raise ValueError(f"policy {pol.name!r} stores {kind} in {nbytes} bytes; only 1 (int8), 2 and 4 exist")
  return _FLOAT_OF_BYTES[nbytes]


# ------------------------------------------------------------------------------------------ quantizer


def fp16_scale(absmax: Any) -> jax.Array:
  """absmax / 127 as fp16, rounded up so that |x| / scale <= 127 (nothing is clipped)."""
  want = jnp.maximum(jnp.asarray(absmax, jnp.float32) / QMAX, _MIN_SCALE)
  s16 = want.astype(jnp.float16)
  return jnp.where(s16.astype(jnp.float32) < want, jnp.nextafter(s16, jnp.float16(jnp.inf)), s16)


def quantize_tensor(x: Any) -> QTensor:
  """Symmetric int8 with one fp16 scale per channel of the last axis (traceable: used by STE too)."""
  x = jnp.asarray(x, jnp.float32)
  absmax = jnp.max(jnp.abs(x), axis=tuple(range(x.ndim - 1))) if x.ndim > 1 else jnp.abs(x)
  scale = fp16_scale(absmax)
  q = jnp.clip(jnp.round(x / _along_last(scale, x.ndim)), -QMAX, QMAX).astype(jnp.int8)
  return QTensor(q, scale)


def _along_last(scale: Any, ndim: int) -> jax.Array:
  """The (C,) scales as f32, shaped to broadcast over the last axis of a rank-`ndim` tensor (explicitly)."""
  return jnp.asarray(scale, jnp.float32).reshape((1,) * (ndim - 1) + (-1,))


def dequantize_tensor(t: QTensor) -> jax.Array:
  return t.q.astype(jnp.float32) * _along_last(t.scale, t.q.ndim)


def quantize_params(params: Any, policy: str | memory.DtypePolicy = "int8") -> QuantizedParams:
  """PTQ: the pytree as `policy` stores it (int8 + fp16 scales where it prices 1 byte, floats elsewhere)."""
  pol = memory.get_policy(policy)
  return QuantizedParams(_quantize_tree(params, pol), pol.name)


@functools.partial(jax.jit, static_argnums=1)
def _quantize_tree(params: Any, pol: memory.DtypePolicy) -> Any:
  # One compiled program instead of hundreds of eagerly dispatched small ops (the policy is hashable).
  def one(path, x):
    fmt = tensor_format(_keys(path), np.shape(x), pol)
    return quantize_tensor(x) if fmt == "int8" else jnp.asarray(x).astype(fmt)

  return jax.tree_util.tree_map_with_path(one, params)


def _is_qtensor(x) -> bool:
  return isinstance(x, QTensor)


def dequantize(qparams: QuantizedParams, dtype: Any = jnp.float32) -> Any:
  """Float params equal to what is stored: the Flax model run on them is the PTQ model (weight fake-quant)."""
  return _dequantize_tree(qparams.tree, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=1)
def _dequantize_tree(tree: Any, dtype: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda t: (dequantize_tensor(t) if _is_qtensor(t) else jnp.asarray(t, jnp.float32)).astype(dtype),
      tree, is_leaf=_is_qtensor)


def fake_quant(params: Any, policy: str | memory.DtypePolicy = "int8") -> Any:
  """dequantize(quantize_params(params, policy)); idempotent (a fake-quantized tree maps to itself)."""
  return dequantize(quantize_params(params, policy))


def ste_fake_quant(params: Any, policy: str | memory.DtypePolicy = "int8") -> Any:
  """Forward = the stored model, backward = identity: x + stop_gradient(fq(x) - x) on every leaf."""
  pol = memory.get_policy(policy)

  def one(path, x):
    x = jnp.asarray(x, jnp.float32)
    fmt = tensor_format(_keys(path), x.shape, pol)
    xs = jax.lax.stop_gradient(x)  # nothing of the quantizer is differentiated (round, nextafter)
    fq = dequantize_tensor(quantize_tensor(xs)) if fmt == "int8" else xs.astype(fmt).astype(jnp.float32)
    return x + (fq - xs)

  return jax.tree_util.tree_map_with_path(one, params)


# ------------------------------------------------------------------------------------------------ LoRA


def dense_kernel_paths(params: Any) -> list[tuple[str, ...]]:
  return [_keys(p) for p, x in jax.tree_util.tree_leaves_with_path(params)
          if memory.classify(_keys(p), np.shape(x)) == memory.DENSE]


def lora_init(params: Any, rank: int, rng: jax.Array) -> dict[str, dict[str, jax.Array]]:
  """Adapters {"a/b/kernel": {"a": (in, r), "b": (r, out)}} for every Dense kernel.

  A ~ U(+-1/sqrt(in)) (PyTorch/peft's kaiming-uniform default) and B = 0, so the adapted model starts as
  the base.
  """
  flat = traverse_util.flatten_dict(params)
  out = {}
  for i, path in enumerate(dense_kernel_paths(params)):
    fan_in, fan_out = flat[path].shape
    r = min(rank, fan_in, fan_out)
    bound = 1.0 / np.sqrt(fan_in)
    a = jax.random.uniform(jax.random.fold_in(rng, i), (fan_in, r), jnp.float32, -bound, bound)
    out["/".join(path)] = {"a": a, "b": jnp.zeros((r, fan_out), jnp.float32)}
  return out


def lora_merge(base: Any, adapters: dict[str, dict[str, Any]], scale: float = 1.0) -> Any:
  """base with W + scale * A @ B at every adapted kernel (pure; differentiable in the adapters)."""
  flat = dict(traverse_util.flatten_dict(base))
  for name, ab in adapters.items():
    path = tuple(name.split("/"))
    flat[path] = flat[path] + scale * (ab["a"] @ ab["b"])
  return traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------------------------------- adaptation


def _batch_stream(batches: Iterable[Any]):
  """Yields batches forever: a re-iterable (list, dataset) is restarted when exhausted; an iterator is not."""
  it = iter(batches)
  restartable = it is not batches
  while True:
    try:
      yield next(it)
    except StopIteration:
      if not restartable:
        return
      it = iter(batches)
      try:
        yield next(it)
      except StopIteration:
        return


def adapt(params: Any, loss_fn: Callable[[Any, Any, jax.Array], jax.Array], batches: Iterable[Any], *,
          steps: int, lr: float = 1e-4, rank: int = 8, method: str = "lora", seed: int = 0,
          policy: str | memory.DtypePolicy = "int8", alpha: float | None = None, weight_decay: float = 0.0,
          callback: Callable[[int, float], None] | None = None) -> Any:
  """Quantization-aware adaptation after PTQ; returns float params of the adapted model.

  `loss_fn(params, batch, rng) -> scalar` is any training loss over a float param tree (rng for dropout).
  method="lora": the base is `fake_quant(params, policy)` and stays frozen; only the adapters train (adamw,
    `lr`, `weight_decay`); scale alpha / rank (alpha defaults to rank, i.e. scale 1). Returns base + A B
    merged. The merged kernels are off the int8 grid: exporting re-quantizes them.
  method="ste": every parameter trains through `ste_fake_quant`. Returns `fake_quant(trained, policy)`,
    which is exactly the forward used in training and what the exporter stores (quantizing it again is
    the identity).
  `batches` is cycled if re-iterable; training stops early if an iterator runs out. `callback(step, loss)`
  sees every step's loss (a host sync per step; leave it None for speed).
  """
  if method not in ("lora", "ste"):
    raise ValueError(f"method must be 'lora' or 'ste', not {method!r}")
  params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
  key_init, key_loss = jax.random.split(jax.random.key(seed))
  if method == "lora":
    frozen = fake_quant(params, policy)
    trainable = lora_init(params, rank, key_init)
    scale = (rank if alpha is None else alpha) / rank
    build = lambda t, f: lora_merge(f, t, scale)
  else:
    frozen, trainable = None, params
    build = lambda t, f: ste_fake_quant(t, policy)
  opt = optax.adamw(lr, weight_decay=weight_decay)
  opt_state = opt.init(trainable)

  @jax.jit
  def step(trainable, opt_state, frozen, batch, rng):
    loss, grads = jax.value_and_grad(lambda t: loss_fn(build(t, frozen), batch, rng))(trainable)
    updates, opt_state = opt.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  for i, batch in zip(range(steps), _batch_stream(batches)):
    trainable, opt_state, loss = step(trainable, opt_state, frozen, batch, jax.random.fold_in(key_loss, i))
    if callback is not None:
      callback(i, float(loss))
  if method == "lora":
    return build(trainable, frozen)
  return fake_quant(trainable, policy)
