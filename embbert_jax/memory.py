"""Memory accounting: parameters, peak activations and bytes under a dtype policy (spec section 3).

Total memory = weight bytes + peak activation bytes of one inference at batch 1 and full length L.
Layers run one after another, so the peak is the worst stage (embedder, one layer, or the head).

Everything here is a closed form of the (frozen) model config, and this module is the only place that
prices memory: `param_shapes` lists every parameter tensor the Flax modules create (paths and shapes; a
test checks it against the initialised pytree for every architecture), `activation_values` gives the peak
live set of each stage's schedule, `weight_bytes_of` is the one pricing rule of a `DtypePolicy`.
`estimate` reports it all for one config (describe, experiment tables), `policy_bytes` gives the same
totals under every policy fast enough for the sweep's budget filter over thousands of configs (cached per
config), and `training_bytes` sizes one member of a training group. XLA's own figure for the compiled
program is `describe.compiled_memory`.

Sizes are decimal: 1 MB = 10^6 bytes, 1 kB = 10^3 bytes (MiB/KiB are binary).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Iterable

from embbert_jax import configs

# --------------------------------------------------------------------------------- parameter shapes

# Tensor classes a dtype policy prices separately.
DENSE, EMBED, CONV, OTHER = "dense_kernel", "embedding", "conv_kernel", "other"
CLASSES = (DENSE, EMBED, CONV, OTHER)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  path: tuple[str, ...]
  shape: tuple[int, ...]

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def kind(self) -> str:
    return classify(self.path, self.shape)


def classify(path: tuple[str, ...], shape: tuple[int, ...]) -> str:
  """The tensor class of a parameter, from its leaf name and rank (the same rule for specs and pytrees)."""
  leaf = path[-1]
  if leaf == "embedding":
    return EMBED
  if leaf == "kernel" and len(shape) == 2:
    return DENSE
  if leaf == "kernel" and len(shape) == 3:
    return CONV
  return OTHER


def _dense(prefix, name, fan_in, out, bias=True):
  specs = [ParamSpec((*prefix, name, "kernel"), (fan_in, out))]
  return specs + ([ParamSpec((*prefix, name, "bias"), (out,))] if bias else [])


def _conv(prefix, name, k, out):
  return [ParamSpec((*prefix, name, "kernel"), (k, 1, out)), ParamSpec((*prefix, name, "bias"), (out,))]


def _embed(prefix, name, n, f):
  return [ParamSpec((*prefix, name, "embedding"), (n, f))]


def _vec(prefix, name, n, leaf="scale"):
  return [ParamSpec((*prefix, name, leaf), (n,))]


def _embedder_specs(c, p):
  if c.embedder == "standard":
    return (_embed(p, "token", c.vocab_size, c.hidden) + _embed(p, "position", c.max_len, c.hidden)
            + _embed(p, "segment", 3, c.hidden))
  return (_embed(p, "token", c.vocab_size, c.embed_dim) + _embed(p, "position", c.max_len, c.embed_dim)
          + _embed(p, "segment", 3, c.hidden)
          + _dense(p, "token_proj", c.embed_dim, c.hidden, bias=False)
          + _dense(p, "position_proj", c.embed_dim, c.hidden, bias=False))


def _efficient_attention_specs(c, p):
  return _dense(p, "q", c.hidden, c.hidden) + _dense(p, "out", c.hidden, c.hidden)


def _layer_specs(c, p):
  d = c.hidden
  if c.arch == "embbert":
    specs = _vec(p, "norm", d)
    if c.use_attention:
      specs += _efficient_attention_specs(c, (*p, "attention"))
    if c.use_conv:
      di = configs.conv_inner(c)
      specs += _conv((*p, "conv_branch"), "conv", c.conv_kernel, di) + _dense((*p, "conv_branch"), "proj", di, d)
    if c.use_attention and c.use_conv and c.aggregation == "difference":
      specs += [ParamSpec((*p, "aggregate", n), (d,)) for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")]
    return specs
  if c.arch in ("bert", "nanobert"):
    attn = sum((_dense((*p, "attention"), n, d, d) for n in ("q", "k", "v", "out")), [])
    return (attn + _vec(p, "norm1", d) + _vec(p, "norm1", d, "bias") + _dense(p, "ffn_in", d, c.ffn_dim)
            + _dense(p, "ffn_out", c.ffn_dim, d) + _vec(p, "norm2", d) + _vec(p, "norm2", d, "bias"))
  if c.arch == "nanobert_efficient":
    return (_vec(p, "norm1", d) + _efficient_attention_specs(c, (*p, "attention")) + _vec(p, "norm2", d)
            + _dense(p, "ffn_in", d, c.ffn_dim) + _dense(p, "ffn_out", c.ffn_dim, d))
  if c.arch == "mamba":
    di, n, r = configs.mamba_inner(c), c.d_state, c.dt_rank
    m = (*p, "mixer")
    return (_vec(p, "norm", d) + _dense(m, "in_proj", d, 2 * di, bias=False) + _conv(m, "conv", c.d_conv, di)
            + _dense(m, "x_proj", di, r + 2 * n, bias=False) + _dense(m, "dt_proj", r, di)
            + [ParamSpec((*m, "A_log"), (di, n)), ParamSpec((*m, "D"), (di,))]
            + _dense(m, "out_proj", di, d, bias=False))
  return []


def _stem_specs(c) -> list[ParamSpec]:
  specs = _embedder_specs(c, ("encoder", "embedder"))
  return specs + _conv(("encoder",), "conv", c.conv_kernel, c.hidden) if c.arch == "embedder_conv" else specs


def _num_layers(c) -> int:
  return c.num_layers if c.arch in ("embbert", "bert", "nanobert", "nanobert_efficient", "mamba") else 0


def _head_specs(c, task: str) -> list[ParamSpec]:
  if task == "classify":
    readout = [ParamSpec(("head", "readout"), (c.num_labels,))] if c.label_readout else []
    return _dense(("head",), "dense", c.hidden, c.num_labels) + readout
  return _dense(("head",), "mlm", c.hidden, c.vocab_size) + _dense(("head",), "nsp", c.hidden, 2)


def param_shapes(cfg, task: str = "classify") -> list[ParamSpec]:
  """Every parameter tensor of `models.build_model(cfg, task)`, from the config alone."""
  c = configs.ModelConfig.from_dict(cfg)
  layers = [s for i in range(_num_layers(c)) for s in _layer_specs(c, ("encoder", f"layer_{i}"))]
  return _stem_specs(c) + layers + _head_specs(c, task)


def part_of(path: tuple[str, ...]) -> str:
  """Groups a parameter path into a report row: embedder, layers, conv, head."""
  if path[0] == "head":
    return "head"
  return "layers" if path[1].startswith("layer_") else path[1]


def num_params(cfg, task: str = "classify") -> int:
  if task == "classify":
    return sum(_tally(configs.ModelConfig.from_dict(cfg))[0].values())
  return sum(s.size for s in param_shapes(cfg, task))


def params_by_part(cfg, task: str = "classify") -> dict[str, int]:
  out: dict[str, int] = {}
  for s in param_shapes(cfg, task):
    out[part_of(s.path)] = out.get(part_of(s.path), 0) + s.size
  return out


def pytree_specs(params) -> list[ParamSpec]:
  """The ParamSpecs of an initialised (or abstract) parameter pytree, in the same form as param_shapes."""
  import jax
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return [ParamSpec(tuple(k.key for k in path), tuple(leaf.shape)) for path, leaf in leaves]


# ------------------------------------------------------------------------------------- activations


def stage_activations(cfg) -> dict[str, int]:
  """Peak live values of each stage at batch 1 and length L (spec section 3; see each line's reason).

  embbert layer, both branches: the spec's rule L^2 + L*d + L*d_i (score map + two L x d tensors, or the
  conv step), which reproduces the authors' figures. With one branch: attention L^2 + 2Ld (u, q and the
  score map), conv 2Ld + L*d_i (u, the conv output and the projected output). The identity residual keeps
  x alive: + Ld.
  multi-head attention (bert, nanobert): h*L^2 + 4Ld (x, Q, K, V and h score maps); FFN 2Ld + L*ffn.
  nanobert_efficient: efficient attention L^2 + 2Ld (as EmbBERT's attention; reproduces 1.984 MB); FFN
  2Ld + L*ffn.
  mamba (our associative scan): x, z, u, delta (Ld + 3 L*di), B and C (2 L*n) and the scan's decay and
  drive terms (2 L*di*n).
  Nano Embedder: the token part (Ld) while the position rows (Lr) are projected to Ld: 2Ld + Lr.
  Standard embedder: 2Ld. embedder_conv's conv: input and output, 2Ld. Head: d + C.
  """
  c = configs.ModelConfig.from_dict(cfg)
  L, d = c.max_len, c.hidden
  st = {"embedder": 2 * L * d + (L * c.embed_dim if c.embedder == "nano" else 0)}
  if c.arch == "embedder_conv":
    st["conv"] = 2 * L * d
  if c.arch == "embbert":
    di = configs.conv_inner(c)
    if c.use_attention and c.use_conv:
      layer = L * L + L * d + L * di
    elif c.use_attention:
      layer = L * L + 2 * L * d
    else:
      layer = 2 * L * d + L * di
    st["layer"] = layer + (L * d if c.residual else 0)
  elif c.arch in ("bert", "nanobert"):
    st["layer"] = max(c.num_heads * L * L + 4 * L * d, 2 * L * d + L * c.ffn_dim)
  elif c.arch == "nanobert_efficient":
    st["layer"] = max(L * L + 2 * L * d, 2 * L * d + L * c.ffn_dim)
  elif c.arch == "mamba":
    di, n = configs.mamba_inner(c), c.d_state
    st["layer"] = L * d + 3 * L * di + 2 * L * n + 2 * L * di * n
  st["head"] = d + c.num_labels
  return st


def activation_values(cfg) -> int:
  return max(stage_activations(cfg).values())


# ------------------------------------------------------------------------------------ dtype policies


@dataclasses.dataclass(frozen=True)
class DtypePolicy:
  """Bytes per stored value of each tensor class, for weights and for activations.

  A class stored in int8 carries one scale per output channel (last axis), `scale_bytes` each.
  """
  name: str
  dense_kernel: float
  embedding: float
  conv_kernel: float
  other: float
  activation: float
  scale_bytes: float
  description: str

  def bytes_for(self, kind: str) -> float:
    return getattr(self, kind)


POLICIES: dict[str, DtypePolicy] = {p.name: p for p in (
    DtypePolicy("fp32", 4, 4, 4, 4, 4, 0, "every parameter and activation float32 (the spec's rule)"),
    DtypePolicy("fp16", 2, 2, 2, 2, 2, 0, "every parameter and activation float16"),
    DtypePolicy("int8", 1, 2, 2, 2, 2, 2,
                "EmbBERT-Q: Dense kernels int8 (per-output-channel symmetric, fp16 scales), every other "
                "parameter fp16, activations fp16"),
    DtypePolicy("int8_full", 1, 1, 1, 2, 1, 2,
                "microcontroller build: Dense, conv and embedding tables int8 (per-output-channel fp16 "
                "scales), biases/norms/vectors fp16, activations int8"),
)}


def get_policy(policy: str | DtypePolicy) -> DtypePolicy:
  if isinstance(policy, DtypePolicy):
    return policy
  if policy not in POLICIES:
    raise ValueError(f"unknown dtype policy {policy!r}; known: {', '.join(POLICIES)}")
  return POLICIES[policy]


def is_quantized(policy: DtypePolicy, kind: str) -> bool:
  return kind != OTHER and policy.bytes_for(kind) == 1


def _class_totals(specs: Iterable[ParamSpec]) -> tuple[dict[str, int], dict[str, int]]:
  """Values and output channels (one int8 scale each) per tensor class, in order of first appearance."""
  size: dict[str, int] = {}
  channels: dict[str, int] = {}
  for s in specs:
    kind = classify(s.path, s.shape)
    size[kind] = size.get(kind, 0) + math.prod(s.shape)
    channels[kind] = channels.get(kind, 0) + s.shape[-1]
  return size, channels


def _price(size: dict[str, int], channels: dict[str, int], pol: DtypePolicy) -> dict[str, int]:
  """The pricing rule: values x bytes per class, plus one scale per output channel of a quantized class."""
  out = {k: int(n * getattr(pol, k)) for k, n in size.items()}
  scales = sum([channels[k] * pol.scale_bytes for k in size if is_quantized(pol, k)])
  if scales:
    out["scales"] = int(scales)
  return out


def weight_bytes_of(specs: Iterable[ParamSpec], policy: str | DtypePolicy) -> dict[str, int]:
  """Weight bytes per tensor class, plus the quantization scales as their own entry."""
  return _price(*_class_totals(specs), get_policy(policy))


@dataclasses.dataclass(frozen=True)
class MemoryReport:
  """Memory of one inference (batch 1, length L) under `policy`."""
  policy: str
  params: int
  params_by_part: dict[str, int]
  weight_bytes: int
  weight_bytes_by_class: dict[str, int]
  activation_values: int
  activation_bytes: int
  stage_activations: dict[str, int]

  @property
  def total_bytes(self) -> int:
    return self.weight_bytes + self.activation_bytes

  def as_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "total_bytes": self.total_bytes}


def estimate(cfg, policy: str | DtypePolicy = "fp32") -> MemoryReport:
  """Weights + peak activations of the classifier for `cfg`, priced under `policy`."""
  m = configs.ModelConfig.from_dict(cfg)
  pol = get_policy(policy)
  specs = param_shapes(m, "classify")
  by_class = weight_bytes_of(specs, pol)
  acts = activation_values(m)
  return MemoryReport(policy=pol.name, params=sum(s.size for s in specs), params_by_part=params_by_part(m),
                      weight_bytes=sum(by_class.values()), weight_bytes_by_class=by_class,
                      activation_values=acts, activation_bytes=int(acts * pol.activation),
                      stage_activations=stage_activations(m))


def total_bytes(cfg, policy: str | DtypePolicy = "fp32") -> int:
  return estimate(cfg, policy).total_bytes


@functools.lru_cache(maxsize=1 << 16)
def _tally(m: configs.ModelConfig) -> tuple[dict[str, int], dict[str, int], int]:
  """(values per class, channels per class, peak activation values) of the classifier, once per config:
  param_shapes' totals, with the N equal layers listed once and counted N times (the sweep prices
  thousands of configs)."""
  size, channels = _class_totals(_stem_specs(m) + _head_specs(m, "classify"))
  n = _num_layers(m)
  if n:
    layer_size, layer_channels = _class_totals(_layer_specs(m, ("encoder", "layer_0")))
    for k in layer_size:
      size[k] = size.get(k, 0) + n * layer_size[k]
      channels[k] = channels.get(k, 0) + n * layer_channels[k]
  return size, channels, activation_values(m)


def policy_bytes(cfg) -> dict[str, dict[str, int]]:
  """{policy: {"weight", "activation", "total"}} under every policy: estimate()'s figures, shapes
  counted once per config (the sweep's budget filter prices every config of a space with this)."""
  size, channels, acts = _tally(configs.ModelConfig.from_dict(cfg))
  out = {}
  for name, pol in POLICIES.items():
    weight = sum(_price(size, channels, pol).values())
    act = int(acts * pol.activation)
    out[name] = {"weight": weight, "activation": act, "total": weight + act}
  return out


def training_bytes(cfg, batch_size: int) -> int:
  """A conservative estimate of one training member's memory (what sizes a group of trainings): params,
  gradients, AdamW moments, the best copy and the update (6 x fp32 params) plus every layer's activations
  of a batch kept for the backward pass (the inference live set x layers x 3, at full length)."""
  m = configs.ModelConfig.from_dict(cfg)
  acts = sum(stage_activations(m).values()) * (m.num_layers + 2) * 3 * batch_size
  return 4 * (6 * num_params(m) + acts)


# ------------------------------------------------------------------------------------------ budgets

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*)\s*$", re.IGNORECASE)
BUDGET_FORMS = ("2MB, 2 MB, 781kB, 1.5MiB, 500KiB or 2000000 (bytes); kB/MB/GB are decimal (10^3, 10^6, "
                "10^9 bytes), KiB/MiB/GiB binary (2^10, 2^20, 2^30)")
# No tiny model needs more: a budget above this is a typo (and 1e99999999MB must not be computed exactly).
MAX_BUDGET = 10**12


class BudgetError(ValueError):
  """An unparsable, non-positive or absurdly large memory budget."""


def parse_budget(text: str | int | float) -> int:
  """Bytes in a budget string such as "2MB", "781kB", "1.5MiB" or "2000000"; raises BudgetError, also for
  a budget below one byte or above MAX_BUDGET (1 TB). The number is read as a float (its exponent is
  bounded first), so no input makes this slow."""
  if isinstance(text, (int, float)) and not isinstance(text, bool):
    text = repr(text)
  m = _BUDGET_RE.match(text or "") if isinstance(text, str) else None
  unit = m.group(3).lower() if m else None
  shown = text.strip()[:40] + ("..." if len(text.strip()) > 40 else "") if isinstance(text, str) else text
  if not m or unit not in _UNITS:
    raise BudgetError(f"cannot read memory budget {shown!r}: use a positive size such as {BUDGET_FORMS}")
  exponent = m.group(2) or "0"
  value = float("inf") if len(exponent.lstrip("+-")) > 4 else float(f"{m.group(1)}e{exponent}") * _UNITS[unit]
  if value > MAX_BUDGET:  # also inf
    raise BudgetError(f"memory budget {shown!r} is above the largest accepted, {format_bytes(MAX_BUDGET)}; "
                      f"e.g. {BUDGET_FORMS}")
  if value < 1:
    raise BudgetError(f"memory budget {shown!r} must be at least one byte; e.g. {BUDGET_FORMS}")
  return int(round(value))


def format_bytes(n: float) -> str:
  """Decimal units, 4 significant figures: 1954312 -> '1.954 MB'."""
  for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.4g} {unit}"
  return f"{int(n)} B"
