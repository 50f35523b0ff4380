"""Model configurations: one ConfigDict type for every architecture in the family, and the presets.

A model config is an `ml_collections.ConfigDict` built by `model_config()`; the same object drives the
Flax module (`models.build_model`), the memory estimate (`memory.estimate`) and the training run (it sits
at `config.model` of a training config). Presets are a table of overrides, not copies of code.

Notation of the spec (../shared/design/embbert.md): V vocab_size, L max_len, d hidden, r embed_dim,
e conv_expansion, k conv_kernel, N num_layers, C num_labels.
"""

from __future__ import annotations

import ast
import hashlib
import json
from typing import Any, Iterable

import ml_collections

ARCHS = ("embbert", "bert", "mamba", "embedder", "embedder_conv", "nanobert", "nanobert_efficient")

# Token ids fixed by the spec; the tokenizer places its special pieces at the same ids.
PAD_ID, UNK_ID, CLS_ID, MASK_ID, SEP_ID = 0, 1, 2, 3, 4


def model_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Returns the headline EmbBERT config with `overrides` applied (type-checked by ConfigDict)."""
  c = ml_collections.ConfigDict()
  c.arch = "embbert"  # one of ARCHS
  c.vocab_size = 8192  # V
  c.max_len = 256  # L: positions in the table and the length that memory is budgeted at
  c.hidden = 128  # d
  c.embed_dim = 16  # r: width of the Nano Embedder's tables before the r -> d projections
  c.conv_expansion = 1.0  # e: conv inner width d_i = int(d * e)
  c.conv_kernel = 32  # k: causal depthwise conv kernel (EmbBERT layer; embedder_conv uses it too)
  c.num_layers = 4  # N
  c.num_heads = 1  # attention heads (bert, nanobert); EmbBERT attention is single-head
  c.ffn_dim = 0  # feed-forward width (bert, nanobert, nanobert_efficient)
  c.d_state = 0  # mamba: SSM state size
  c.d_conv = 0  # mamba: conv kernel
  c.dt_rank = 0  # mamba: rank of the delta projection
  c.mamba_expand = 1.0  # mamba: inner width = int(d * mamba_expand)
  c.num_labels = 2  # C; 1 means regression (MSE)
  c.dropout = 0.1  # EmbBERT: on attention probabilities only; bert/nanobert: attention + residual
  c.norm_eps = 1e-6  # RMSNorm / LayerNorm epsilon
  # Ablation switches of the EmbBERT layer (spec section 8.1 and issue 3).
  c.use_attention = True  # branch A
  c.use_conv = True  # branch B
  c.residual = False  # add the identity path around each layer (the reference has none)
  c.aggregation = "difference"  # "difference": lam1*a - lam2*s; "sum": a + s (no lambda vectors)
  c.embedder = "nano"  # "nano" (factorised r -> d) or "standard" (tables at width d)
  c.head = "cls"  # "cls": Dense on position 0; "rms_pool": RMS over time, then Dense
  # The authors' padding behaviour (spec 8.7); off by default, on in the paper comparisons (PUBLISHED).
  c.attend_to_pad = False  # attention gets no padding mask: real tokens attend to [PAD] (bert, nanobert)
  c.pool_over_pad = False  # rms_pool averages over every position, pads included (embedders, mamba)
  # Numerics: params are stored in param_dtype, matmuls run in dtype; softmax/norms/losses in f32.
  c.dtype = "float32"
  c.param_dtype = "float32"
  # Causal depthwise conv lowering: "xla" (one grouped conv), "shift" (k shifted multiply-adds), or "auto":
  # shift on CPU, where benchmarks/train_throughput.py measured it 1.2-1.4x faster per train step; xla
  # elsewhere (not yet measured on accelerators).
  c.conv_impl = "auto"
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
# averages over all positions of the padded batch. The paper comparisons (experiments/) set these.
PUBLISHED: dict[str, dict[str, Any]] = {
    "bert": dict(attend_to_pad=True),
    "nanobert": dict(attend_to_pad=True),
    "mamba": dict(pool_over_pad=True),
    "embedder": dict(pool_over_pad=True),
    "embedder_conv": dict(pool_over_pad=True),
}

EMBBERT_PRESETS = ("nano", "tiny", "embbert", "med", "big")
BASELINE_PRESETS = ("bert", "mamba", "embedder", "embedder_conv", "nanobert", "nanobert_efficient")


class ConfigError(ValueError):
  """A model config that cannot be built (unknown preset, bad field, impossible shape)."""


def get_preset(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """The preset `name` with further `overrides`; raises ConfigError naming the known presets."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
  return model_config(**{**PRESETS[name], **overrides})


def conv_inner(cfg) -> int:
  """d_i = int(d * e), the conv branch's inner width."""
  return int(cfg.hidden * cfg.conv_expansion)


def mamba_inner(cfg) -> int:
  return int(cfg.hidden * cfg.mamba_expand)


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
  need(cfg.head in ("cls", "rms_pool"), f"head must be 'cls' or 'rms_pool', not {cfg.head!r}")
  need(cfg.aggregation in ("difference", "sum"), f"aggregation must be 'difference' or 'sum'")
  need(cfg.conv_impl in ("auto", "xla", "shift", "toeplitz"),
       "conv_impl must be 'auto', 'xla', 'shift' or 'toeplitz'")
  need(0.0 <= cfg.dropout < 1.0, "dropout must be in [0, 1)")
  if cfg.embedder == "nano":
    need(cfg.embed_dim >= 1, "embed_dim (r) must be >= 1 for the Nano Embedder")
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
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, int) and isinstance(value, float) and value.is_integer():
    value = int(value)
  return value


def apply_overrides(cfg: ml_collections.ConfigDict, assignments: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies "dotted.key=value" strings (as ml_collections' config_flags would) in place; returns cfg."""
  for item in assignments:
    key, sep, text = item.partition("=")
    key = key.strip().lstrip("-")
    if key.startswith("config."):
      key = key[len("config."):]
    if not sep or not key:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
      node, leaf = dotted_parent(cfg, key)
    except KeyError as e:
      raise ConfigError(f"unknown config field {key!r}{e.args[1]}") from None
    try:
      node[leaf] = _parse_value(text, node[leaf])
    except TypeError as e:
      raise ConfigError(f"bad value for {key!r}: {e}") from None
  return cfg


def dotted_parent(cfg, key: str) -> tuple[Any, str]:
  """(the node holding the last part of "a.b.c", "c"); KeyError(key, hint) if a part does not exist."""
  node, parts = cfg, key.split(".")
  for p in parts[:-1]:
    if p not in node or not hasattr(node[p], "keys"):
      raise KeyError(key, "")
    node = node[p]
  if parts[-1] not in node:
    raise KeyError(key, f"; fields here: {', '.join(sorted(node.keys()))}")
  return node, parts[-1]


def set_dotted(cfg, key: str, value: Any) -> None:
  """cfg[a][b] = value for key "a.b"; KeyError if the field does not exist (no new fields by typo)."""
  node, leaf = dotted_parent(cfg, key)
  node[leaf] = value


def flatten_dict(d: dict, sep: str = ".", prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1} (with `sep` between the keys)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten_dict(v, sep, f"{prefix}{k}{sep}"))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Fields that change no array shape and no traced graph: trials that differ only here share compiled code.
NON_SHAPE_FIELDS = ("dropout",)


def config_hash(cfg, fields: Iterable[str] | None = None) -> str:
  """A stable short hash of a (model) config, for deduplicating trials and naming compiled programs."""
  d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  if fields is not None:
    d = {k: d[k] for k in fields}
  blob = json.dumps(d, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:12]


def find_config_file(name: str, folder: str, repo_folder, error: type[Exception], what: str,
                     listed=lambda path: not path.stem.startswith("_")):
  """A config file (a search space, a study) given as a path, or by name in ./<folder> and then in the
  repository's <folder>; `error` with the known names otherwise."""
  from pathlib import Path
  p = Path(name)
  if p.suffix == ".py" or "/" in name:
    if not p.is_file():
      raise error(f"{what} file not found: {name}")
    return p
  for base in (Path(folder), Path(repo_folder)):
    if (base / f"{name}.py").is_file():
      return base / f"{name}.py"
  known = sorted(f.stem for f in Path(repo_folder).glob("*.py") if listed(f))
  raise error(f"unknown {what} {name!r}; known: {', '.join(known)} (or pass a .py file)")


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

