"""The sweep's search space: load a `sweeps/*.py` file, enumerate its configs, filter by memory, order them.

A space file's `get_config()` returns a ConfigDict (see embbert_jax/sweeps/default.py):

  families.<name>.preset  the model preset whose fields the grid overrides (configs.PRESETS)
  families.<name>.fixed   further overrides shared by the whole family (optional)
  families.<name>.grid    field -> tuple of values; the family contributes the product of its grids
  train                   overrides of the training config (train.get_config()), e.g. learning_rate
  train_grid              training field -> tuple of values (optional): every model config trains once
                          per point of their product, e.g. dict(learning_rate=(1e-3, 3e-3), seed=(0, 1, 2))
                          gives 6 member trials per config (see `members`); the sweep trains the members
                          of one config together in one program when the trainer can (worker.py)
  evals                   validations per trial (the early-stopping rungs)
  early_stop              enabled, after (fraction of steps), margin, min_better: see sweep.hopeless
  num_labels              C used for the memory filter when the task is not loaded (tests)

The space is the union over families. Each config is a frozen configs.ModelConfig, canonicalised before
hashing (fields that a config does not use are reset to their defaults, e.g. conv_kernel when
use_conv=False), so two grid points that build the same network are one candidate. The memory budget is a
hard filter priced by memory.py (memory.policy_bytes: memory.estimate's totals under every policy): only
candidates with min_budget <= total bytes <= budget are ever proposed.

Ledger trials carry a candidate's grid point as Optuna parameters named "<family>.<field>" with a
categorical distribution over the grid's values, so that samplers (TPE, NSGA-II) see a consistent space.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
from pathlib import Path
from typing import Any

import ml_collections

from embbert_jax import configs, memory

PACKAGE_SWEEPS = Path(__file__).resolve().parent / "sweeps"
FAMILY_PARAM = "family"


class SpaceError(ValueError):
  """A search space that cannot be loaded or enumerated; the message is one line."""


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
  """One trainable configuration: where it sits in the space, its canonical model config and its memory."""
  family: str
  point: tuple[tuple[str, Any], ...]  # (field, value) of the grid, in the family's field order
  model: configs.ModelConfig  # the canonical model config
  hash: str  # configs.config_hash of the model config
  bytes: dict[str, dict[str, int]]  # policy -> {"weight", "activation", "total"} (memory.policy_bytes)
  params: int

  def total(self, policy: str) -> int:
    return self.bytes[policy]["total"]

  @property
  def optuna_params(self) -> dict[str, Any]:
    return {FAMILY_PARAM: self.family, **{f"{self.family}.{k}": v for k, v in self.point}}

  def describe(self) -> str:
    """Short knob string, e.g. 'embbert V8192 L128 d128 r16 e1 k32 N4'."""
    return describe_model(self.model, self.family)


_SHORT = dict(vocab_size="V", max_len="L", hidden="d", embed_dim="r", conv_expansion="e", conv_kernel="k",
              num_layers="N", ffn_dim="ffn", num_heads="h")


def describe_model(m, family: str = "") -> str:
  parts = [family or m.arch]
  for field, short in _SHORT.items():
    if field in ("embed_dim",) and m.embedder != "nano":
      continue
    if field in ("conv_expansion", "conv_kernel") and not (m.arch == "embbert" and m.use_conv):
      continue
    if field == "ffn_dim" and m.arch not in ("bert", "nanobert", "nanobert_efficient"):
      continue
    if field == "num_heads" and m.arch not in ("bert", "nanobert"):
      continue
    v = getattr(m, field)
    parts.append(f"{short}{int(v) if isinstance(v, float) and v.is_integer() else v}")
  flags = [f for f, on in (("-attn", not m.use_attention), ("-conv", not m.use_conv), ("+res", m.residual),
                           ("sum", m.aggregation == "sum")) if on and m.arch == "embbert"]
  return " ".join(parts + flags)


# ----------------------------------------------------------------------------------------------- loading


def resolve(space: str) -> Path:
  """A space file from a path, or a name: the package's embbert_jax/sweeps/ first, then ./sweeps."""
  return configs.find_config_file(space, PACKAGE_SWEEPS, "sweeps", SpaceError, "search space")


def load(space: str) -> ml_collections.ConfigDict:
  """Runs the space file's get_config(); any failure becomes one SpaceError line."""
  path = resolve(space)
  cfg = configs.run_config_file(path, SpaceError, 'search space')
  if not isinstance(cfg, ml_collections.ConfigDict) or "families" not in cfg or not cfg.families:
    raise SpaceError(f"search space {path}: get_config() must return a ConfigDict with a non-empty "
                     "'families' field (see embbert_jax/sweeps/default.py)")
  defaults = dict(name=path.stem, train=ml_collections.ConfigDict(), train_grid=ml_collections.ConfigDict(),
                  evals=4, num_labels=2,
                  early_stop=ml_collections.ConfigDict(dict(enabled=True, after=0.5, margin=0.02,
                                                            min_better=2)))
  with cfg.unlocked():
    for key, value in defaults.items():
      if key not in cfg:
        cfg[key] = value
  members(cfg)  # a malformed train_grid fails here, in one line
  return cfg


def members(space: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """The training knobs of each member trial of one model config: the product of space.train_grid in its
  field order, last field fastest ([{}] without a train grid: one trial per config)."""
  grid = space.get("train_grid") or {}
  grid = configs.flatten_dict(grid.to_dict() if hasattr(grid, "to_dict") else dict(grid))
  for field, values in grid.items():
    if not isinstance(values, (tuple, list)) or not values:
      raise SpaceError(f"train_grid.{field} must be a non-empty tuple of values")
    if len(set(map(repr, values))) != len(values):
      raise SpaceError(f"train_grid.{field} repeats a value: {tuple(values)!r}")
  return [dict(zip(grid, values)) for values in itertools.product(*(tuple(v) for v in grid.values()))]


# ----------------------------------------------------------------------------------------- enumeration

_DEFAULTS = configs.ModelConfig()


def model_of(preset: str, **overrides: Any) -> configs.ModelConfig:
  """configs.get_preset(preset, **overrides) frozen, without building a ConfigDict (enumerating the
  default space is 10x faster); tests/test_sweep.py checks the equality."""
  if preset not in configs.PRESETS:
    raise configs.ConfigError(f"unknown preset {preset!r}{configs.did_you_mean(preset, configs.PRESETS)}; "
                              f"known presets: {', '.join(configs.PRESETS)}")
  return configs.ModelConfig.from_dict({**configs.PRESETS[preset], **overrides})


def canonical(m: configs.ModelConfig) -> configs.ModelConfig:
  """Resets the fields `m` does not use to their defaults (same network, same hash)."""
  unused: list[str] = []
  uses_conv = (m.arch == "embbert" and m.use_conv) or m.arch == "embedder_conv"
  if not uses_conv:
    unused += ["conv_kernel", "conv_expansion"]
  elif m.arch == "embedder_conv":
    unused += ["conv_expansion"]
  if m.arch != "embbert" or not (m.use_attention and m.use_conv):
    unused += ["aggregation"]
  if m.arch != "embbert":
    unused += ["use_attention", "use_conv", "residual"]
  if m.embedder != "nano":
    unused += ["embed_dim"]
  if m.arch not in ("bert", "nanobert"):
    unused += ["num_heads"]
  if m.arch not in ("bert", "nanobert", "nanobert_efficient"):
    unused += ["ffn_dim"]
  if m.arch != "mamba":
    unused += ["d_state", "d_conv", "dt_rank", "mamba_expand"]
  if m.arch in ("embedder", "embedder_conv"):
    unused += ["num_layers", "dropout"]
  reset = {f: getattr(_DEFAULTS, f) for f in unused if getattr(m, f) != getattr(_DEFAULTS, f)}
  return dataclasses.replace(m, **reset) if reset else m


def build(family: str, fam, point: dict[str, Any], num_labels: int, fixed: dict[str, Any] | None = None
          ) -> Candidate:
  """The candidate of one grid point; raises configs.ConfigError for a point no model can be built from.
  `fixed`: the family's fixed fields, if the caller has read them already (ConfigDict.get of a missing
  key is slow: it looks for near names to suggest)."""
  fixed = dict(fam.get("fixed", {}) or {}) if fixed is None else fixed
  fields = {**fixed, **point, "num_labels": num_labels}
  if fields.get("label_readout") and num_labels > 2:  # one table column per class: a narrower table goes without
    plain = model_of(fam.preset, **{**fields, "label_readout": False})
    fields["label_readout"] = configs.label_width(num_labels) <= configs.table_width(plain)
  m = canonical(model_of(fam.preset, **fields))
  return Candidate(family, tuple(point.items()), m, configs.config_hash(m), memory.policy_bytes(m),
                   memory.num_params(m))


def enumerate_space(space: ml_collections.ConfigDict, num_labels: int | None = None) -> list[Candidate]:
  """Every distinct buildable candidate of the space (first occurrence wins), in grid order.

  Grid points that no model can be built from (e.g. conv_expansion that does not divide) are skipped:
  they are part of a product, not a mistake. Unknown fields and unknown presets are mistakes.
  """
  c = num_labels or space.num_labels
  seen: dict[str, Candidate] = {}
  for family, fam in space.families.items():
    if "preset" not in fam or fam.preset not in configs.PRESETS:
      raise SpaceError(f"family {family!r}: unknown preset {fam.get('preset')!r}"
                       f"{configs.did_you_mean(fam.get('preset'), configs.PRESETS)}; known presets: "
                       f"{', '.join(configs.PRESETS)}")
    grid = dict(fam.get("grid", {}) or {})
    for field, values in [*grid.items(), *dict(fam.get("fixed", {}) or {}).items()]:
      if field not in configs.FIELD_TYPES or field == "num_labels":
        raise SpaceError(f"family {family!r}: unknown model field {field!r}"
                         f"{configs.did_you_mean(field, configs.FIELD_TYPES)}; fields: "
                         f"{', '.join(sorted(configs.FIELD_TYPES))}")
    for field, values in grid.items():
      if not isinstance(values, (tuple, list)) or not values:
        raise SpaceError(f"family {family!r}: grid.{field} must be a non-empty tuple of values")
    fields, fixed = list(grid), dict(fam.get("fixed", {}) or {})
    for values in itertools.product(*(tuple(grid[f]) for f in fields)):
      try:
        cand = build(family, fam, dict(zip(fields, values)), c, fixed)
      except (configs.ConfigError, TypeError):
        continue
      seen.setdefault(cand.hash, cand)
  return list(seen.values())


def distributions(space) -> dict[str, Any]:
  """Optuna distributions of every parameter a ledger trial can carry."""
  from optuna.distributions import CategoricalDistribution
  out = {FAMILY_PARAM: CategoricalDistribution(tuple(space.families.keys()))}
  for family, fam in space.families.items():
    for field, values in dict(fam.get("grid", {}) or {}).items():
      out[f"{family}.{field}"] = CategoricalDistribution(tuple(values))
  return out


# ------------------------------------------------------------------------------------ filter and order


def fits(cands: list[Candidate], policy: str, budget: int, min_budget: int = 0) -> list[Candidate]:
  return [c for c in cands if min_budget <= c.total(policy) <= budget]


def spread_order(cands: list[Candidate], policy: str) -> list[Candidate]:
  """Orders candidates so that every prefix spreads along log(memory): the smallest and the largest first,
  then always the one nearest the middle of the widest remaining gap (1-D farthest-point order).

  A sweep cut short by --max-trials has then sampled the whole memory range evenly, coarse to fine.
  Candidates of equal memory come in config-hash order; the order is deterministic.
  """
  if len(cands) <= 2:
    return sorted(cands, key=lambda c: (c.total(policy), c.hash))
  pts = sorted(cands, key=lambda c: (c.total(policy), c.hash))
  xs = [math.log(c.total(policy)) for c in pts]
  order = [0, len(pts) - 1]
  heap: list[tuple[float, int, int]] = []  # (-width, lo, hi): open interval of unchosen indices lo+1..hi-1

  def push(lo: int, hi: int) -> None:
    if hi - lo > 1:
      heapq.heappush(heap, (-(xs[hi] - xs[lo]), lo, hi))

  push(0, len(pts) - 1)
  while heap:
    _, lo, hi = heapq.heappop(heap)
    mid = (xs[lo] + xs[hi]) / 2
    # The unchosen index nearest the gap's middle (ties: the smaller index); xs is sorted.
    i = min(max(bisect.bisect_left(xs, mid, lo + 1, hi), lo + 1), hi - 1)
    best = min((j for j in (i - 1, i) if lo < j < hi), key=lambda j: (abs(xs[j] - mid), j))
    order.append(best)
    push(lo, best)
    push(best, hi)
  return [pts[i] for i in order]


def smallest(cands: list[Candidate], policy: str) -> Candidate:
  return min(cands, key=lambda c: (c.total(policy), c.hash))
