"""Model configurations for every architecture in the family, the presets, and the one override path.

`ModelConfig` is the table of model fields (with their defaults and one comment each): a frozen, hashable
dataclass built once (`ModelConfig.from_dict`) from the ConfigDict at `config.model` of a training config
(`model_config()` builds that ConfigDict, so overrides stay type-checked), and handed to the Flax modules
(`models.build_model`), to the memory rule (`memory.py`) and to the compiled-program cache. Nothing changes
a config in place once it is used: a changed field is a new config (`ModelConfig.replace`, `with_fields`).
Presets are a table of overrides, not copies of code. `set_field` is the one setter of a dotted field,
for every command line and config layer.

Notation of the spec (../shared/design/embbert.md): V vocab_size, L max_len, d hidden, r embed_dim,
e conv_expansion, k conv_kernel, N num_layers, C num_labels.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from typing import Any, Iterable

import ml_collections

ARCHS = ("embbert", "bert", "mamba", "embedder", "embedder_conv", "nanobert", "nanobert_efficient")
DTYPES = ("float32", "bfloat16", "float16")  # model.dtype (compute) and model.param_dtype

# Token ids fixed by the spec; the tokenizer places its special pieces at the same ids.
PAD_ID, UNK_ID, CLS_ID, MASK_ID, SEP_ID = 0, 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One network of the family: frozen and hashable, built once (`from_dict`) from the ConfigDict at
  `config.model` and handed to the Flax modules, to memory.py and to the compiled-program cache.

  This class is the table of model fields and their defaults (the headline EmbBERT); add a field here and
  it exists everywhere (`model_config()`, presets, overrides, the sweep's spaces).
  """
  arch: str = "embbert"  # one of ARCHS
  vocab_size: int = 8192  # V
  max_len: int = 256  # L: positions in the table and the length that memory is budgeted at
  hidden: int = 128  # d
  embed_dim: int = 16  # r: width of the Nano Embedder's tables before the r -> d projections
  conv_expansion: float = 1.0  # e: conv inner width d_i = int(d * e)
  conv_kernel: int = 32  # k: causal depthwise conv kernel (EmbBERT layer; embedder_conv uses it too)
  num_layers: int = 4  # N
  num_heads: int = 1  # attention heads (bert, nanobert); EmbBERT attention is single-head
  ffn_dim: int = 0  # feed-forward width (bert, nanobert, nanobert_efficient)
  d_state: int = 0  # mamba: SSM state size
  d_conv: int = 0  # mamba: conv kernel
  dt_rank: int = 0  # mamba: rank of the delta projection
  mamba_expand: float = 1.0  # mamba: inner width = int(d * mamba_expand)
  num_labels: int = 2  # C; 1 means regression (MSE)
  dropout: float = 0.1  # EmbBERT: on attention probabilities only; bert/nanobert: attention + residual
  norm_eps: float = 1e-6  # RMSNorm / LayerNorm epsilon
  # Ablation switches of the EmbBERT layer (spec section 8.1 and issue 3).
  use_attention: bool = True  # branch A
  use_conv: bool = True  # branch B
  residual: bool = False  # add the identity path around each layer (the reference has none)
  aggregation: str = "difference"  # "difference": lam1*a - lam2*s; "sum": a + s (no lambda vectors)
  embedder: str = "nano"  # "nano" (factorised r -> d) or "standard" (tables at width d)
  head: str = "cls"  # "cls": Dense on position 0; "rms_pool" / "mean_pool": RMS / mean over time, then Dense
  # Add to the logits a per-class weight times the mean over the real positions of the token table's last
  # column (C parameters). With label columns (train's label_columns) that column is a linear model of the
  # training split's pieces, and the init sets the weights so the classifier starts as that model (labelcols.py).
  label_readout: bool = False
  # The authors' padding behaviour (spec 8.7); off by default, on in the paper comparisons (PUBLISHED).
  attend_to_pad: bool = False  # attention gets no padding mask: real tokens attend to [PAD] (bert, nanobert)
  pool_over_pad: bool = False  # rms_pool averages over every position, pads included (embedders, mamba)
  # Numerics: params are stored in param_dtype, matmuls run in dtype; softmax/norms/losses in f32.
  dtype: str = "float32"
  param_dtype: str = "float32"
  # Causal depthwise conv lowering: "xla", "shift", "shift_vjp", "toeplitz", or "auto"
  # (conv.resolve_conv_impl picks from the measurements in the README: on CPU shift_vjp for
  # conv_expansion 1 and toeplitz for 2, xla on accelerators).
  conv_impl: str = "auto"

  @classmethod
  def from_dict(cls, values) -> "ModelConfig":
    """The frozen config of a ConfigDict, a dict (e.g. one read from JSON) or a ModelConfig (returned
    as is); ints widen to float fields as ConfigDict widens them; ConfigError for an unknown field, a
    value of the wrong type or a config no module can be built from."""
    if isinstance(values, cls):
      return values
    items = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    unknown = sorted(set(items) - set(FIELD_TYPES))
    if unknown:
      raise ConfigError(f"unknown model field {unknown[0]!r}{did_you_mean(unknown[0], FIELD_TYPES)}; "
                      f"fields: {', '.join(FIELD_TYPES)}")
    m = cls(**{k: _coerce(k, v) for k, v in items.items()})
    validate(m)
    return m

  def replace(self, **changes: Any) -> "ModelConfig":
    """A new config with `changes` (type-checked and validated like from_dict)."""
    return ModelConfig.from_dict({**self.to_dict(), **changes})

  def to_dict(self) -> dict[str, Any]:
    return {f: getattr(self, f) for f in FIELD_TYPES}


# field -> its type (bool, int, float or str), in declaration order.
FIELD_TYPES: dict[str, type] = {f.name: type(f.default) for f in dataclasses.fields(ModelConfig)}


def _coerce(field: str, value: Any) -> Any:
  """`value` as the model field stores it (an int widens to float), else ConfigError."""
  want = FIELD_TYPES[field]
  if want is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if type(value) is not want:
    raise ConfigError(f"model field {field} expects {want.__name__}, got {value!r}")
  return value


def model_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The headline EmbBERT config with `overrides` applied, as the ConfigDict that sits at `config.model`
  of a training config (type-checked by ConfigDict; ModelConfig.from_dict freezes it)."""
  unknown = sorted(set(overrides) - set(FIELD_TYPES))
  if unknown:
    raise ConfigError(f"unknown model field {unknown[0]!r}{did_you_mean(unknown[0], FIELD_TYPES)}; "
                      f"fields: {', '.join(FIELD_TYPES)}")
  c = ml_collections.ConfigDict(ModelConfig().to_dict())
  c.update(overrides)
  validate(c)
  return c


# name -> overrides of model_config(); the spec's section 2.
PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(vocab_size=2048, hidden=64, embed_dim=16, conv_kernel=8, num_layers=2),
    "tiny": dict(vocab_size=2048, hidden=128, embed_dim=16, conv_kernel=16, num_layers=2),
    "embbert": dict(),
    "med": dict(max_len=512, hidden=256, conv_expansion=2, num_layers=6),
    "big": dict(vocab_size=16384, max_len=1024, hidden=512, embed_dim=32, conv_expansion=2,
                conv_kernel=64, num_layers=6),
    # 2 MB baselines.
    # norm_eps 1e-5: the authors' LayerNorm (torch's default) and Mamba RMSNorm. mamba classifies by RMS
    # pooling, as the authors do: a position-0 head on a causal model cannot see the text after [CLS].
    "bert": dict(arch="bert", vocab_size=2048, hidden=80, ffn_dim=160, num_heads=2, num_layers=2,
                 embedder="standard", norm_eps=1e-5),
    "mamba": dict(arch="mamba", vocab_size=2048, hidden=64, mamba_expand=1, d_state=6, d_conv=4,
                  dt_rank=4, num_layers=5, embedder="standard", head="rms_pool", norm_eps=1e-5),
    "embedder": dict(arch="embedder", hidden=320, embed_dim=32, num_layers=0, head="rms_pool"),
    "embedder_conv": dict(arch="embedder_conv", hidden=320, embed_dim=32, conv_kernel=16, num_layers=0,
                          head="rms_pool"),
    "nanobert": dict(arch="nanobert", hidden=90, embed_dim=16, ffn_dim=180, num_heads=2, num_layers=2,
                     norm_eps=1e-5),
    "nanobert_efficient": dict(arch="nanobert_efficient", hidden=128, embed_dim=16, ffn_dim=89,
                               num_layers=4),
}

# The model fields whose published value (the authors' code, spec 8.7) differs from the default, per arch:
# bert and nanobert pass no padding mask to their encoder; the RMS pooling head of the embedders and mamba
# averages over all positions of the padded batch. The paper comparisons (embbert_jax/studies/) set these.
PUBLISHED: dict[str, dict[str, Any]] = {
    "bert": dict(attend_to_pad=True),
    "nanobert": dict(attend_to_pad=True),
    "mamba": dict(pool_over_pad=True),
    "embedder": dict(pool_over_pad=True),
    "embedder_conv": dict(pool_over_pad=True),
}

EMBBERT_PRESETS = ("nano", "tiny", "embbert", "med", "big")


def padding_invariant(cfg) -> bool:
  """True when right padding changes no output at real positions nor the logits: every model with the
  published padding switches (PUBLISHED) off; then a batch may be cut to any width that holds its longest
  example (bucketed training, bucketed evaluation)."""
  return not (cfg.get("attend_to_pad", False) or cfg.get("pool_over_pad", False))


class ConfigError(ValueError):
  """A model config that cannot be built (unknown preset, bad field, impossible shape)."""


def get_preset(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """The preset `name` with further `overrides`; raises ConfigError naming the known presets."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; "
                      f"known presets: {', '.join(PRESETS)}")
  return model_config(**{**PRESETS[name], **overrides})


def label_width(num_labels: int, is_regression: bool = False) -> int:
  """k, the token table's label columns of a task and the features a `label_readout` reads: 1 for two
  classes and regression (one feature, a weight per logit), C for C > 2 (logit c reads column c)."""
  return 1 if (is_regression or num_labels <= 2) else int(num_labels)


def table_width(cfg) -> int:
  """The token table's columns: r for the Nano Embedder, d for the standard one."""
  return int(cfg.embed_dim if cfg.embedder == "nano" else cfg.hidden)


def conv_inner(cfg) -> int:
  """d_i = int(d * e), the conv branch's inner width."""
  return int(cfg.hidden * cfg.conv_expansion)


def mamba_inner(cfg) -> int:
  return int(cfg.hidden * cfg.mamba_expand)


HEADS = ("cls", "rms_pool", "mean_pool")


def validate(cfg) -> None:
  """Raises ConfigError with one line for a config no module can be built from."""
  def need(ok: bool, msg: str) -> None:
    if not ok:
      raise ConfigError(msg)

  need(cfg.arch in ARCHS, f"unknown arch {cfg.arch!r}; known: {', '.join(ARCHS)}")
  need(cfg.vocab_size > 5, "vocab_size must exceed the 5 special tokens")
  need(cfg.max_len >= 2 and cfg.hidden >= 1, "max_len must be >= 2 and hidden >= 1")
  need(cfg.num_labels >= 1, "num_labels must be >= 1 (1 = regression)")
  need(cfg.embedder in ("nano", "standard"), f"embedder must be 'nano' or 'standard', not {cfg.embedder!r}")
  need(cfg.head in HEADS, f"head must be one of {', '.join(HEADS)}, not {cfg.head!r}")
  need(cfg.aggregation in ("difference", "sum"), f"aggregation must be 'difference' or 'sum', not {cfg.aggregation!r}")
  need(cfg.conv_impl in ("auto", "xla", "shift", "shift_vjp", "toeplitz"),
       "conv_impl must be 'auto', 'xla', 'shift', 'shift_vjp' or 'toeplitz'")
  need(0.0 <= cfg.dropout < 1.0, "dropout must be in [0, 1)")
  for field in ("dtype", "param_dtype"):
    need(getattr(cfg, field) in DTYPES, f"model.{field} {getattr(cfg, field)!r} is not a dtype the models "
         f"take; use one of {', '.join(DTYPES)}")
  if cfg.embedder == "nano":
    need(cfg.embed_dim >= 1, "embed_dim (r) must be >= 1 for the Nano Embedder")
  if cfg.label_readout:
    need(label_width(cfg.num_labels) <= table_width(cfg),
         f"label_readout reads one token-table column per class ({cfg.num_labels}) but the table has "
         f"{table_width(cfg)}; widen it or set model.label_readout=false")
  if cfg.arch == "embbert":
    need(cfg.num_layers >= 1, "embbert needs num_layers >= 1")
    need(cfg.use_attention or cfg.use_conv, "an EmbBERT layer needs the attention or the conv branch")
  if cfg.arch == "embbert" and cfg.use_conv or cfg.arch == "embedder_conv":
    need(cfg.conv_kernel >= 1, "conv_kernel must be >= 1")
    need(conv_inner(cfg) >= cfg.hidden and conv_inner(cfg) % cfg.hidden == 0,
         "conv_expansion must make int(hidden * e) a positive multiple of hidden (groups = hidden)")
  if cfg.arch in ("bert", "nanobert"):
    need(cfg.num_heads >= 1 and cfg.hidden % cfg.num_heads == 0, "hidden must be divisible by num_heads")
  if cfg.arch in ("bert", "nanobert", "nanobert_efficient"):
    need(cfg.ffn_dim >= 1 and cfg.num_layers >= 1, f"{cfg.arch} needs ffn_dim >= 1 and num_layers >= 1")
  if cfg.arch == "mamba":
    need(min(cfg.d_state, cfg.d_conv, cfg.dt_rank, mamba_inner(cfg), cfg.num_layers) >= 1,
         "mamba needs d_state, d_conv, dt_rank, int(hidden * mamba_expand) and num_layers >= 1")


# Training fields (train.get_config) and the range each must lie in: (dotted field, lowest, highest,
# whether the lowest itself is allowed). Fields a trainer's config lacks are skipped (the sweep's tests use
# a fake trainer with fewer fields).
_TRAINING_RANGES = (
    ("batch_size", 1, None, True), ("epochs", 0, None, True), ("steps", 0, None, True),
    ("eval_every", 0, None, True), ("log_every", 1, None, True), ("checkpoint_every", 0, None, True),
    ("seq_len", 0, None, True), ("bucket_window", 0, None, True), ("bucket_lengths", 0, None, True),
    ("bucket_compile_gflop", 0.0, None, True), ("bucket_steps", 0, None, True),
    ("learning_rate", 0.0, None, False),
    ("stop_at", 0, None, True), ("patience", 0, None, True),
    ("weight_decay", 0.0, None, True), ("grad_clip", 0.0, None, True), ("label_smoothing", 0.0, 1.0, True),
    ("token_lr_scale", 0.0, None, True),
    ("b1", 0.0, 1.0, True), ("b2", 0.0, 1.0, True), ("eps", 0.0, None, False),
    ("schedule.warmup_steps", 0, None, True), ("schedule.warmup_fraction", 0.0, 1.0, True),
    ("schedule.end_fraction", 0.0, 1.0, True),
    ("pretrain.steps", 0, None, True), ("pretrain.learning_rate", 0.0, None, False),
    ("pretrain.batch_size", 1, None, True), ("pretrain.mask_rate", 0.0, 1.0, False),
    ("pretrain.eval_every", 0, None, True), ("pretrain.eval_pairs", 1, None, True),
    ("pretrain.seq_len", 0, None, True), ("pretrain.max_pairs", 0, None, True),
    ("pretrain.schedule.warmup_steps", 0, None, True), ("pretrain.schedule.warmup_fraction", 0.0, 1.0, True),
    ("pretrain.schedule.end_fraction", 0.0, 1.0, True),
)
_TRAINING_CHOICES = (("group_impl", ("auto", "vmap", "map")), ("schedule.kind", ("constant", "cosine", "linear")),
                     ("pretrain.schedule.kind", ("constant", "cosine", "linear")),
                     ("wandb.mode", ("auto", "online", "offline", "disabled")))


def validate_training(cfg) -> None:
  """Raises ConfigError with one line naming the field for a training config (train.get_config) that
  cannot train as meant: a batch of 0 or fewer examples, no steps and no epochs, a learning rate that is
  not a positive finite number, a negative interval, an unknown choice; and the model (validate).
  train, pretrain and the sweep's trial configs all go through here, before anything trains."""
  import math

  def get(key):
    try:
      node, leaf = dotted_parent(cfg, key)
    except KeyError:
      return None
    return node[leaf]

  for key, lo, hi, closed in _TRAINING_RANGES:
    value = get(key)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise ConfigError(f"training field {key} must be a finite number, not {value!r}")
    above = value >= lo if closed else value > lo
    if not above or (hi is not None and value > hi):
      want = (f"in [{lo}, {hi}]" if closed else f"in ({lo}, {hi}]") if hi is not None else \
          (f">= {lo}" if closed else f"> {lo}")
      raise ConfigError(f"training field {key} must be {want}, not {value!r}")
  for key, choices in _TRAINING_CHOICES:
    value = get(key)
    if value is not None and value not in choices:
      raise ConfigError(f"training field {key} must be one of {', '.join(choices)}, not {value!r}")
  if get("steps") == 0 and get("epochs") == 0:
    raise ConfigError("training field epochs must be >= 1 when steps is 0 (steps > 0 overrides epochs)")
  if "model" in cfg:
    validate(cfg.model)


def _parse_value(text: str, current: Any) -> Any:
  """Parses a command-line value to the type of the field it replaces."""
  if isinstance(current, bool):
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
      return True
    if low in ("0", "false", "no", "off"):
      return False
    raise ConfigError(f"expected a boolean, got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, float) and isinstance(value, str):
    try:
      value = float(value)  # nan, inf: the range checks (validate_training) name them
    except ValueError:
      raise ConfigError(f"expected a number, got {text!r}") from None
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, int) and isinstance(value, float) and value.is_integer():
    value = int(value)
  if isinstance(current, int) and not isinstance(value, int):
    raise ConfigError(f"expected an integer, got {text!r}")
  return value


class UnknownField(ConfigError):
  """A dotted key that names no field of the config."""


def set_field(cfg, key: str, value: Any) -> None:
  """The one way to set a dotted field ("learning_rate", "model.hidden", "pretrain.steps") of a config:
  every command line (train, pretrain, sweep, experiment) and every config layer (a space's `train`, a
  study's arms) goes through here. A string is parsed to the field's type, an int widens to a float
  field; UnknownField for a field that does not exist (no new fields by typo), ConfigError for a value of
  the wrong type. A model config at cfg.model is a ConfigDict until ModelConfig.from_dict freezes it."""
  try:
    node, leaf = dotted_parent(cfg, key)
  except KeyError as e:
    raise UnknownField(f"unknown config field {key!r}{e.args[1]}") from None
  current = node[leaf]
  if isinstance(value, str) and current is not None and not isinstance(current, str):
    try:
      value = _parse_value(value, current)
    except ConfigError as e:
      raise ConfigError(f"bad value for {key!r}: {e}") from None
  elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"bad value for {key!r}: {e}") from None


def with_fields(cfg: ml_collections.ConfigDict, fields: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `cfg` with the dotted `fields` set (set_field); `cfg` itself is left as it was."""
  out = cfg.copy_and_resolve_references()
  for key, value in fields.items():
    set_field(out, key, value)
  return out


def apply_overrides(cfg: ml_collections.ConfigDict, assignments: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies "dotted.key=value" strings (also "--config.dotted.key=value", as ml_collections'
  config_flags spells them) with set_field, in place; returns cfg."""
  for item in assignments:
    key, sep, text = item.partition("=")
    key = key.strip().lstrip("-")
    if key.startswith("config."):
      key = key[len("config."):]
    if not sep or not key:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    set_field(cfg, key, text)
  return cfg


def dotted_parent(cfg, key: str) -> tuple[Any, str]:
  """(the node holding the last part of "a.b.c", "c"); KeyError(key, hint) if a part does not exist."""
  node, parts = cfg, key.split(".")
  for p in parts[:-1]:
    if p not in node or not hasattr(node[p], "keys"):
      groups = [k for k in node.keys() if hasattr(node[k], "keys")]
      raise KeyError(key, did_you_mean(p, groups) + (f"; groups: {', '.join(sorted(groups))}" * bool(groups)))
    node = node[p]
  if parts[-1] not in node:
    raise KeyError(key, f"{did_you_mean(parts[-1], node.keys())}; fields here: {', '.join(sorted(node.keys()))}")
  return node, parts[-1]


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """"; did you mean 'x'?" for the closest of `known` to a mistyped `name` (difflib), else ""."""
  import difflib
  close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
  return f"; did you mean {close[0]!r}?" if close else ""


def flatten_dict(d: dict, sep: str = ".", prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1} (with `sep` between the keys)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten_dict(v, sep, f"{prefix}{k}{sep}"))
    else:
      out[f"{prefix}{k}"] = v
  return out


def nest_dict(values: dict[str, Any]) -> dict[str, Any]:
  """{"a.b": 1, "a": {"c": 2}, "d": 3} -> {"a": {"b": 1, "c": 2}, "d": 3}: the inverse of flatten_dict
  (ConfigDict.update merges the result into nested fields)."""
  out: dict[str, Any] = {}
  for key, value in flatten_dict(values).items():
    *heads, leaf = key.split(".")
    node = out
    for head in heads:
      node = node.setdefault(head, {})
    node[leaf] = value
  return out


def config_hash(cfg, fields: Iterable[str] | None = None) -> str:
  """A stable short hash of a (model) config, for deduplicating trials and naming compiled programs."""
  d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  if fields is not None:
    d = {k: d[k] for k in fields}
  blob = json.dumps(d, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:12]


def find_config_file(name: str, package_folder, local_folder: str, error: type[Exception], what: str,
                     listed=lambda path: not path.stem.startswith("_")):
  """A config file (a search space, a study) given as a path, or by name: the package's own copy first
  (embbert_jax/sweeps/, embbert_jax/studies/), then ./<local_folder>, so a file that happens to sit in
  the current directory never shadows a shipped one; `error` with the known names otherwise."""
  from pathlib import Path
  p = Path(name)
  if p.suffix == ".py" or "/" in name:
    if not p.is_file():
      raise error(f"{what} file not found: {name}")
    return p
  for base in (Path(package_folder), Path(local_folder)):
    if (base / f"{name}.py").is_file():
      return base / f"{name}.py"
  known = sorted({f.stem for base in (Path(package_folder), Path(local_folder)) for f in base.glob("*.py")
                  if listed(f)})
  raise error(f"unknown {what} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)} "
              "(or pass a .py file)")


def run_config_file(path, error: type[Exception], what: str):
  """Imports a user's config file and returns its get_config(); whatever it raises becomes one `error`
  line naming the file (and the line of a syntax error)."""
  import importlib.util
  try:
    spec = importlib.util.spec_from_file_location(f"embbert_{what.replace(' ', '_')}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception as e:  # a user's file: one line, whatever it raised
    where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ""
    raise error(f"cannot load {what} {path}{where}: {type(e).__name__}: {e}") from None


def init_fields(init: dict) -> dict[str, Any]:
  """The training-config fields that carry an init (inits.Init.record()) to the trainer: init_from for a
  pre-trained encoder, token_vectors for token vectors, nothing for scratch or an in-run pre-training."""
  if init.get("kind") == "embeddings":
    return {"token_vectors": True}
  return {"init_from": init["path"]} if init.get("path") else {}
