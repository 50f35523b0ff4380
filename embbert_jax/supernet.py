"""A weight-sharing EmbBERT supernet: one set of weights whose slices are every config of a search space.

Once-for-All, BigNAS, HAT and AutoTinyBERT pre-train one supernet and let each sub-network inherit its
slice; this module holds the slicing rules for EmbBERT and the pieces of its sandwich-rule training
(../shared/design/search.md, B1-B4). The supernet of a set of configs has, on each elastic axis, the
largest value any of them uses; every other field (vocabulary, switches, dtypes) must be shared.

How each axis maps onto the supernet's tensors (`extract`):

* d (hidden): the leading d channels of every tensor that has them (tables, projections, norm scale, q/out,
  lambda vectors, conv input channels, heads). Attention scale, RMS statistic and lambda dots then use the
  active d by construction, because the child is an ordinary model of width d.
* N (layers): the first N layers; the head reads layer N.
* r (embed dim): the leading r columns of the token and position tables, rows of both projections.
* e (conv expansion): conv output channel o = c * e + m reads input channel c (`conv.causal_depthwise_conv`
  repeats inputs in that order), so the inner axis is viewed as (d_max, e_max) and cut to [:d, :e]; a flat
  [:d*e] would pair the wrong channels.
* k (conv kernel): taps run oldest to newest and the last multiplies x_t, so a child keeps the LAST k taps
  (the causal counterpart of OFA's centre crop).
* L (positions): the leading L rows of the position table.

Training sees (d, N) as static shapes (at most |d| x |N| programs) and (r, e, k) as masks on the supernet's
full-size tensors (`train_params`): zeroed table columns, conv channels and taps make the masked model
compute exactly what the extracted child computes, without a program per child. The extracted child's
shapes are `memory.param_shapes(child)` by construction (its own parameter count and memory).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from embbert_jax import configs, memory

# Elastic axes: field -> how a child may differ from the supernet.
ELASTIC = ("hidden", "num_layers", "embed_dim", "conv_expansion", "conv_kernel", "max_len")
# Fields a supernet's children may differ in without changing any shared tensor.
_FREE = ELASTIC + ("num_labels", "conv_impl", "dropout")


class SupernetError(ValueError):
  """Configs that cannot share one supernet; the message is one line."""


def _fields(cfg) -> dict[str, Any]:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def _check_embbert(cfg) -> None:
  if cfg.arch != "embbert" or cfg.embedder != "nano":
    raise SupernetError(f"a supernet holds EmbBERT configs with the Nano Embedder, not arch={cfg.arch!r} "
                        f"embedder={cfg.embedder!r}")


def supernet_config(cfgs: Sequence) -> Any:
  """The smallest supernet holding every config: shared fields equal, each elastic axis at its maximum."""
  if not cfgs:
    raise SupernetError("a supernet needs at least one config")
  first = _fields(cfgs[0])
  for cfg in cfgs:
    _check_embbert(cfg)
    f = _fields(cfg)
    for key in first:
      if key not in _FREE and f[key] != first[key]:
        raise SupernetError(f"configs differ in {key!r} ({first[key]!r} vs {f[key]!r}): one supernet per "
                            f"value (vocabularies each get their own)")
  top = {ax: max(_fields(c)[ax] for c in cfgs) for ax in ELASTIC}
  return configs.model_config(**{**first, **top})


def check_child(sup, child) -> None:
  """Raises SupernetError unless `child` is a slice of `sup`."""
  _check_embbert(child)
  s, c = _fields(sup), _fields(child)
  for key in s:
    if key in ELASTIC and c[key] > s[key]:
      raise SupernetError(f"{key}={c[key]} exceeds the supernet's {s[key]}")
    if key not in _FREE and c[key] != s[key]:
      raise SupernetError(f"{key}={c[key]!r} differs from the supernet's {s[key]!r}")


# ------------------------------------------------------------------------------------------ extraction


def _inner(x, axis: int, sup, child) -> Any:
  """Cuts the conv inner axis (size d_max * e_max) of `x` to the child's d * e channels, (d, e)-wise."""
  d_max, e_max = sup.hidden, int(sup.conv_expansion)
  d, e = child.hidden, int(child.conv_expansion)
  shape = x.shape[:axis] + (d_max, e_max) + x.shape[axis + 1:]
  cut = (slice(None),) * axis + (slice(0, d), slice(0, e))
  y = x.reshape(shape)[cut]
  return y.reshape(x.shape[:axis] + (d * e,) + y.shape[axis + 2:])


def _take(path: tuple[str, ...], x, target: tuple[int, ...], sup, child):
  """The child's slice of one supernet tensor (leading slices, except the conv's taps and inner axis)."""
  if path[-2:] == ("conv", "kernel"):  # (K, 1, d_i): the last k taps, the (d, e) channels
    return _inner(x[x.shape[0] - target[0]:], 2, sup, child)
  if path[-2:] == ("conv", "bias"):
    return _inner(x, 0, sup, child)
  if path[-2:] == ("proj", "kernel") and "conv_branch" in path:  # (d_i, d)
    x = _inner(x, 0, sup, child)
  return x[tuple(slice(0, t) for t in target)]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _put(tree: dict, path, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def extract(super_params, sup, child, task: str = "classify") -> dict:
  """The child's parameters (exactly `memory.param_shapes(child, task)`) sliced from the supernet's.

  `super_params` must hold the supernet's encoder; the head is sliced too when present and its label count
  matches (a pre-trained supernet carries MLM/NSP heads, a fine-tuned child gets a new classifier head).
  """
  check_child(sup, child)
  out: dict = {}
  for spec in memory.param_shapes(child, task):
    try:
      x = _get(super_params, spec.path)
    except KeyError:
      raise SupernetError(f"the supernet has no parameter {'/'.join(spec.path)}") from None
    y = _take(spec.path, x, spec.shape, sup, child)
    if tuple(y.shape) != spec.shape:
      raise SupernetError(f"{'/'.join(spec.path)}: sliced to {tuple(y.shape)}, the child needs {spec.shape}")
    _put(out, spec.path, y)
  return out


# ----------------------------------------------------------------------------------- masked training


def train_config(sup, hidden: int, num_layers: int):
  """The config whose programs train every child of width `hidden` and depth `num_layers`: the
  supernet's r, e, k and L, masked per child (`masks`, `train_params`)."""
  return configs.model_config(**{**_fields(sup), "hidden": hidden, "num_layers": num_layers})


def masks(sup, child) -> dict[str, np.ndarray]:
  """The child's cheap axes as 0/1 vectors over the supernet's r columns, e multipliers and k taps."""
  check_child(sup, child)
  k_max = sup.conv_kernel
  return {"r": (np.arange(sup.embed_dim) < child.embed_dim).astype(np.float32),
          "e": (np.arange(int(sup.conv_expansion)) < int(child.conv_expansion)).astype(np.float32),
          "k": (np.arange(k_max) >= k_max - child.conv_kernel).astype(np.float32)}


def train_params(super_params, sup, hidden: int, num_layers: int, m: dict, task: str = "pretrain") -> dict:
  """The parameters of `train_config(sup, hidden, num_layers)`: sliced on (d, N), masked on (r, e, k).

  Traceable: `m` may hold traced arrays, so one program serves every child of this (d, N). Gradients
  through it are zero outside the child's slice, so summing the children's gradients updates each
  shared weight by the children that use it.
  """
  tc = train_config(sup, hidden, num_layers)
  inner = lambda v: jnp.tile(v, hidden)  # channel c * e_max + m of the inner axis gets multiplier m's bit
  out: dict = {}
  for spec in memory.param_shapes(tc, task):
    x = _take(spec.path, _get(super_params, spec.path), spec.shape, sup, tc)
    name = spec.path[-2:]
    if name in (("token", "embedding"), ("position", "embedding")):
      x = x * m["r"][None, :]
    elif name == ("conv", "kernel"):
      x = x * m["k"][:, None, None] * inner(m["e"])[None, None, :]
    elif name == ("conv", "bias"):
      x = x * inner(m["e"])
    _put(out, spec.path, x)
  return out


# ------------------------------------------------------------------------------------------- sampling


def sandwich(cands: Sequence, sup, rng: np.random.Generator, n_random: int = 2,
             policy: str = "fp32", sizes: np.ndarray | None = None) -> list:
  """The children of one sandwich step: the largest (the supernet itself), the smallest candidate by
  memory, and `n_random` candidates drawn one per log-memory band (so small and large children train
  alike, whatever the space's density). `sizes`: the candidates' total bytes, if already known (a
  training loop prices them once, not every step)."""
  if not cands:
    raise SupernetError("no candidate configs to sample from")
  if sizes is None:
    sizes = np.array([memory.total_bytes(c, policy) for c in cands], dtype=np.float64)
  smallest = cands[int(np.argmin(sizes))]
  picks = [sup, smallest]
  if n_random:
    edges = np.exp(np.linspace(math.log(sizes.min()), math.log(sizes.max()) + 1e-9, n_random + 1))
    for b in range(n_random):
      inside = np.flatnonzero((sizes >= edges[b]) & (sizes < edges[b + 1]))
      pool = inside if inside.size else np.arange(len(cands))
      picks.append(cands[int(rng.choice(pool))])
  return picks


def shape_key(cfg) -> tuple[int, int]:
  """The static part of a child: children with equal keys share one compiled program."""
  return int(cfg.hidden), int(cfg.num_layers)

