"""The causal depthwise convolution of the EmbBERT layer (spec 1.3, branch B) and its lowerings.

`causal_depthwise_conv(x, kernel, bias, impl)`: output t sees inputs t-K+1..t, channel multiplier O // C in
PyTorch's grouped-conv order. Four lowerings give the same numbers and gradients (tests/test_models.py):
"xla" (one grouped convolution), "shift" (K shifted multiply-adds, differentiated by JAX: what the
exports trace), "shift_vjp" (the same forward, a hand-written backward) and "toeplitz" (block-Toeplitz
matmuls); "auto" picks by backend from measurements (`resolve_conv_impl`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def causal_depthwise_conv(x_BxLxC: Array, kernel_Kx1xO: Array, bias_O: Array, impl: str = "auto") -> Array:
  """Causal depthwise conv with channel multiplier O // C: output t sees inputs t-K+1..t.

  Output channel o reads input channel o // (O // C), PyTorch's grouped-conv order. The lowerings give the
  same numbers (to float rounding): "xla" is one grouped convolution, "shift" is K shifted multiply-adds
  differentiated by JAX, "shift_vjp" the same forward with a hand-written backward (`_shift_conv_bwd`:
  the input gradient as K shifted multiply-adds, the kernel gradient as matmuls), "toeplitz" one batched
  matmul per block of positions (`_toeplitz_conv`). "auto" picks per backend (`resolve_conv_impl`) by
  measurement (benchmarks/pipeline.py and the README's Performance section; 2-core CPU, batch 32):
  on CPU shift_vjp for channel multiplier 1, the fastest train step at every kernel measured (K = 8, 16,
  32; headline K = 32: 1.1-1.2x toeplitz, which beat shift by 1.2x and xla by 2-2.6x; its forward is
  shift's, the fastest forward, for batch-1 inference), toeplitz for multiplier 2 (conv_expansion 2,
  where it measured 1.2-1.9x shift_vjp); xla on GPU/TPU (not measured there yet). "shift" stays for
  exports (plain slices and adds, no custom gradient).
  """
  k, _, out = kernel_Kx1xO.shape
  chans = x_BxLxC.shape[-1]
  mult = out // chans
  impl = resolve_conv_impl(impl, mult)
  x = jnp.repeat(x_BxLxC, mult, axis=-1) if mult > 1 else x_BxLxC
  x = x.astype(kernel_Kx1xO.dtype) if x.dtype != kernel_Kx1xO.dtype else x
  if impl == "shift":
    y = _shift_conv(x, kernel_Kx1xO[:, 0, :])
  elif impl == "shift_vjp":
    y = _shift_conv_vjp(x, kernel_Kx1xO[:, 0, :])
  elif impl == "toeplitz":
    y = _toeplitz_conv(x, kernel_Kx1xO[:, 0, :])
  elif impl == "xla":
    y = lax.conv_general_dilated(x, kernel_Kx1xO, window_strides=(1,), padding=[(k - 1, 0)],
                                 dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=out)
  else:
    raise ValueError(f"unknown conv lowering {impl!r}: 'auto', 'xla', 'shift', 'shift_vjp' or 'toeplitz'")
  return y + bias_O[None, None]


def resolve_conv_impl(impl: str, multiplier: int = 1) -> str:
  """The lowering that `impl` ("auto" or a name) runs on the default backend for a conv with this
  channel multiplier (conv_expansion); kernel size and length do not change the choice on CPU.

  Measured on CPU (benchmarks/step_profile.py --compare, train steps): with multiplier 1, shift_vjp is
  the fastest at every K (8, 16, 32) and length (48-256) tried, 1.06-1.8x toeplitz; with multiplier 2
  (conv_expansion 2) toeplitz is: 1.2x shift_vjp at K = 32, 1.3-1.9x at K = 16 (L = 64-128)."""
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "xla"
  return "shift_vjp" if multiplier == 1 else "toeplitz"


def _shift_conv(x_BxLxC: Array, kernel_KxC: Array) -> Array:
  """Causal depthwise conv (no bias) as K shifted multiply-adds."""
  k, length = kernel_KxC.shape[0], x_BxLxC.shape[1]
  xp = jnp.pad(x_BxLxC, ((0, 0), (k - 1, 0), (0, 0)))
  return sum(xp[:, j:j + length, :] * kernel_KxC[j][None, None] for j in range(k))


@jax.custom_vjp
def _shift_conv_vjp(x_BxLxC: Array, kernel_KxC: Array) -> Array:
  """`_shift_conv` with a hand-written backward pass (`_shift_conv_bwd`); the same forward numbers."""
  return _shift_conv(x_BxLxC, kernel_KxC)


def _shift_conv_fwd(x_BxLxC, kernel_KxC):
  return _shift_conv(x_BxLxC, kernel_KxC), (x_BxLxC, kernel_KxC)


def _shift_conv_bwd(res, g_BxLxC):
  """d/dx is the anti-causal conv of g with the same kernel (K shifted multiply-adds, fused by XLA like
  the forward); d/dkernel is `_conv_kernel_grad`. Autodiff of `_shift_conv` instead reduces K shifted
  products over the whole batch one lag at a time: K passes over memory, the slowest part of its step."""
  x, kernel = res
  k, length = kernel.shape[0], x.shape[1]
  gp = jnp.pad(g_BxLxC, ((0, 0), (0, k - 1), (0, 0)))
  dx = sum(gp[:, m:m + length, :] * kernel[k - 1 - m][None, None] for m in range(k))
  return dx.astype(x.dtype), _conv_kernel_grad(x, g_BxLxC, k).astype(kernel.dtype)


_shift_conv_vjp.defvjp(_shift_conv_fwd, _shift_conv_bwd)


def _conv_kernel_grad(x_BxLxC: Array, g_BxLxC: Array, k: int, block: int = 32) -> Array:
  """dkernel[j, c] = sum over b, t of x[b, t - (K-1-j), c] g[b, t, c], as matmuls.

  Both operands are moved channel-major first (two plain transposes), positions cut into blocks; per
  channel, M_c = windows_c^T G_c (a (window x block) matmul contracting over batch x blocks), and the
  lag-m diagonal of M_c sums into dkernel[K-1-m, c] (a 0/1 matrix product). About 134 MFLOP for the
  headline layer, against K full passes over the activations for the lag-by-lag reduction."""
  batch, length, chans = x_BxLxC.shape
  prev = -(-(k - 1) // block)
  n = -(-length // block)
  f32 = jnp.promote_types(x_BxLxC.dtype, jnp.float32)
  x_CxBxL = x_BxLxC.astype(f32).reshape(batch * length, chans).T.reshape(chans, batch, length)
  g_CxBxL = g_BxLxC.astype(f32).reshape(batch * length, chans).T.reshape(chans, batch, length)
  xp = jnp.pad(x_CxBxL, ((0, 0), (0, 0), (prev * block, n * block - length))).reshape(chans, batch, n + prev,
                                                                                      block)
  windows_CxBxNxW = jnp.concatenate([xp[:, :, q:q + n] for q in range(prev + 1)], axis=3)
  g_CxBxNxT = jnp.pad(g_CxBxL, ((0, 0), (0, 0), (0, n * block - length))).reshape(chans, batch, n, block)
  m_CxWxT = jnp.einsum("cbnw,cbnt->cwt", windows_CxBxNxW, g_CxBxNxT)
  lag_WxT = jnp.arange(block)[None, :] + prev * block - jnp.arange((prev + 1) * block)[:, None]
  inside_WxT = (lag_WxT >= 0) & (lag_WxT < k)
  tap_WxTxK = ((k - 1 - lag_WxT)[..., None] == jnp.arange(k)[None, None]) & inside_WxT[..., None]
  return jnp.einsum("cwt,wtj->jc", m_CxWxT, tap_WxTxK.astype(f32))


def _toeplitz_conv(x_BxLxC: Array, kernel_KxC: Array, block: int = 0) -> Array:
  """Causal depthwise conv (no bias) as block-Toeplitz matmuls.

  Positions are cut into blocks of `block`; output block n reads input blocks n-P..n (P = ceil((K-1) /
  block) earlier blocks hold the receptive field), so each channel's conv is one (block x (P+1) block)
  Toeplitz matrix T_c applied to every window: an einsum batched over channels, i.e. matmuls instead of K
  memory-bound passes over the activations. T_c[t, s] = kernel[K-1-lag, c] for lag = t + P*block - s in
  [0, K), else 0; its gradient folds back onto the kernel. Channels stay the minor axis (no transposes:
  a channel-major layout measured 0.9x shift per train step, this one 1.1-1.3x).
  """
  k, _ = kernel_KxC.shape
  block = block or (16 if k < 32 else 32)  # the faster per train step on CPU at K = 32 (and 64)
  batch, length, chans = x_BxLxC.shape
  prev = -(-(k - 1) // block)
  n = -(-length // block)
  xp_BxMxC = jnp.pad(x_BxLxC, ((0, 0), (prev * block, n * block - length), (0, 0)))
  blocks_BxMxbxC = xp_BxMxC.reshape(batch, n + prev, block, chans)
  windows_BxNxWxC = jnp.concatenate([blocks_BxMxbxC[:, q:q + n] for q in range(prev + 1)], axis=2)
  lag_bxW = jnp.arange(block)[:, None] + prev * block - jnp.arange((prev + 1) * block)[None, :]
  inside = (lag_bxW >= 0) & (lag_bxW < k)
  toeplitz_CxbxW = jnp.where(inside[None], kernel_KxC.T[:, jnp.where(inside, k - 1 - lag_bxW, 0)], 0)
  y_BxNxbxC = jnp.einsum("bnwc,ctw->bntc", windows_BxNxWxC, toeplitz_CxbxW)
  return y_BxNxbxC.reshape(batch, n * block, chans)[:, :length]
