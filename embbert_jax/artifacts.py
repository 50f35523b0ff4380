"""Saved models and the format-independent export core: int8 tensors with fp16 scales, a manifest, a C header.

The layer below every deployment format: `export_c`, `export_onnx`, `export_tflite` and `predict` import
this module, and `export` (the command line and the format dispatcher) sits above them all.

A saved model is a directory written by `save_model` (params.npz of "/"-joined param paths, config.json
with the model config and the tokenizer's file name, the tokenizer copied beside them); train.py writes its
final model with the same function. `export_npz` writes the export directory:

- `model.npz`: one entry per parameter, named by its path ("encoder/layer_0/attention/q/kernel"), in the
  policy's storage type (see `quantize`), and for each int8 tensor its fp16 scales as "<path>.scale".
- `model.h` (`--format c-header`): the same tensors as `const int8_t` / `const uint16_t` (fp16 bits) /
  `const float` arrays plus the config as `#define`s. Include it in exactly one .c file (as TFLite
  Micro's model data); other files define EMBBERT_DECLARE_ONLY first to get the extern declarations.
- `manifest.json`: format version, model config, policy, tokenizer file, special ids, every tensor's
  dtype/shape/bytes (and its scale's), weight byte totals and the memory module's estimate.
- `tokenizer.model`: the sentencepiece model, when the checkpoint or --tokenizer names one.

Byte-exact by construction: the tensors' payload (array bytes, not the npz container) sums to
`memory.estimate(cfg, policy).weight_bytes`, because `quantize` takes its int8/float decision from the
same `memory` rule that prices the weights; `export_npz` checks the equality before writing.

Layouts (row-major): Dense kernels (in, out) with y = x W + b, per-output-channel scales; conv kernels
(k, 1, d_i), causal depthwise, output channel o reads input channel o // (d_i / d); embedding tables
(rows, width) with one scale per column.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embbert_jax import configs, memory
from embbert_jax.files import write_bytes_atomic, write_text_atomic

MODEL_FORMAT = "embbert_jax.model/1"
EXPORT_FORMAT = "embbert_jax.export/1"
PARAMS_FILE, CONFIG_FILE, TOKENIZER_FILE = "params.npz", "config.json", "tokenizer.model"
MODEL_NPZ, MANIFEST, HEADER = "model.npz", "manifest.json", "model.h"
SCALE_SUFFIX = ".scale"
NPZ_FORMATS = ("npz", "c-header", "all")


class CheckpointError(ValueError):
  """A saved model that is missing, unreadable or does not match its config (one-line message)."""


class ExportError(ValueError):
  """A model the C runtime cannot run (one-line message)."""


# ------------------------------------------------------------------------------------ saved models


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """{"encoder/layer_0/attention/q/kernel": array, ...} in pytree order; bfloat16 and friends become f32."""
  import jax
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    arr = np.asarray(leaf)
    if arr.dtype not in (np.float16, np.float32, np.float64, np.int8):
      arr = arr.astype(np.float32)  # npz cannot round-trip ml_dtypes without pickle
    out["/".join(str(getattr(k, "key", k)) for k in path)] = arr
  return out


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, arr in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = arr
  return tree


def save_model(path: str | Path, params: Any, model_cfg: Any,
               tokenizer_path: str | Path | None = None, label_names: Sequence[str] | None = None,
               add_cls: bool = True) -> Path:
  """Writes params.npz, config.json and (if given) the tokenizer as tokenizer.model into directory `path`,
  each file whole (files.py: a training run killed while saving never leaves half a model behind).
  A classifier's label names (and whether its texts start with [CLS]) go into config.json, so the folder
  alone names its outputs wherever it is copied or read from (predict, export), not only where its
  training run's task still loads."""
  path = Path(path)
  path.mkdir(parents=True, exist_ok=True)
  write_npz(path / PARAMS_FILE, flatten_params(params))
  tok_name = None
  if tokenizer_path is not None:
    tok_name = TOKENIZER_FILE
    if Path(tokenizer_path).resolve() != (path / tok_name).resolve():
      write_bytes_atomic(path / tok_name, Path(tokenizer_path).read_bytes())
  meta = {"format": MODEL_FORMAT, "model": model_cfg.to_dict(), "tokenizer": tok_name}
  if label_names:
    meta.update(label_names=[str(n) for n in label_names], add_cls=bool(add_cls))
  write_text_atomic(path / CONFIG_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
  return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """An .npz written whole (rendered in memory, then files.write_bytes_atomic)."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes_atomic(path, buf.getvalue())


def load_model(path: str | Path) -> tuple[dict[str, Any], Any, Path | None]:
  """(params as nested dict of numpy arrays, model config, tokenizer path or None); CheckpointError if bad.

  `path` is the directory or its params.npz. The params must match `memory.param_shapes(cfg, task)` for
  the classifier or the pre-training model (train.py saves both; only a classifier can be exported).
  """
  path = Path(path)
  if path.is_file() and path.name == PARAMS_FILE:
    path = path.parent
  if not path.exists():
    raise CheckpointError(f"checkpoint not found: {path}")
  if not (path / PARAMS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
    raise CheckpointError(f"{path} is not a saved model: it needs {PARAMS_FILE} and {CONFIG_FILE} "
                          f"(written by embbert_jax.artifacts.save_model)")
  try:
    meta = json.loads((path / CONFIG_FILE).read_text())
    cfg = configs.model_config(**meta["model"])
  except (json.JSONDecodeError, KeyError, TypeError, configs.ConfigError) as e:
    raise CheckpointError(f"corrupt {path / CONFIG_FILE}: {type(e).__name__}: {e}") from None
  try:
    with np.load(path / PARAMS_FILE, allow_pickle=False) as z:
      flat = {k: z[k] for k in z.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise CheckpointError(f"corrupt {path / PARAMS_FILE}: {type(e).__name__}: {e}") from None
  if task_of(flat, cfg) is None:
    want = {"/".join(s.path): s.shape for s in memory.param_shapes(cfg)}
    diff = sorted(set(want.items()) ^ {(k, tuple(v.shape)) for k, v in flat.items()})[:3]
    raise CheckpointError(f"{path / PARAMS_FILE} does not match its config (first differences from a "
                          f"classifier: {diff})")
  tok = meta.get("tokenizer")
  return unflatten_params(flat), cfg, (path / tok if tok else None)


def task_of(flat: dict[str, Any], cfg) -> str | None:
  """The task ("classify" or "pretrain") whose exact param shapes the flat params have, else None."""
  got = {k: tuple(np.shape(v)) for k, v in flat.items()}
  for task in ("classify", "pretrain"):
    if got == {"/".join(s.path): s.shape for s in memory.param_shapes(cfg, task)}:
      return task
  return None


# ------------------------------------------------------------------------------------------- export


def export_arrays(qparams) -> dict[str, np.ndarray]:
  """The tensors as stored: "<path>" for values, "<path>.scale" for the fp16 scales of int8 tensors."""
  import jax
  from embbert_jax import quantize
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(qparams.tree, is_leaf=quantize._is_qtensor):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if isinstance(leaf, quantize.QTensor):
      out[name], out[name + SCALE_SUFFIX] = np.asarray(leaf.q), np.asarray(leaf.scale)
    else:
      out[name] = np.asarray(leaf)
  return out


def build_manifest(cfg, policy: str, arrays: dict[str, np.ndarray], tokenizer: str | None) -> dict[str, Any]:
  pol = memory.get_policy(policy)
  tensors = []
  for name, arr in arrays.items():
    if name.endswith(SCALE_SUFFIX):
      continue
    scale = arrays.get(name + SCALE_SUFFIX)
    tensors.append({
        "name": name, "class": memory.classify(tuple(name.split("/")), arr.shape), "dtype": str(arr.dtype),
        "shape": list(arr.shape), "bytes": int(arr.nbytes),
        "scale": None if scale is None else {"name": name + SCALE_SUFFIX, "dtype": str(scale.dtype),
                                             "shape": list(scale.shape), "bytes": int(scale.nbytes)}})
  by_class: dict[str, int] = {}
  for t in tensors:
    by_class[t["class"]] = by_class.get(t["class"], 0) + t["bytes"]
    if t["scale"]:
      by_class["scales"] = by_class.get("scales", 0) + t["scale"]["bytes"]
  est = memory.estimate(cfg, pol)
  return {
      "format": EXPORT_FORMAT, "config": cfg.to_dict(), "policy": pol.name,
      "policy_description": pol.description,
      "tokenizer": tokenizer,
      "special_ids": dict(pad=configs.PAD_ID, unk=configs.UNK_ID, cls=configs.CLS_ID, mask=configs.MASK_ID,
                          sep=configs.SEP_ID),
      "quantization": "symmetric int8 in [-127, 127], x ~= q * scale, one fp16 scale per last-axis channel",
      "tensors": tensors, "weight_bytes": int(sum(a.nbytes for a in arrays.values())),
      "weight_bytes_by_class": by_class, "memory_estimate": est.as_dict(),
  }


def _c_name(name: str) -> str:
  return "embbert_" + name.replace("/", "_").replace(".", "_")


def _c_values(arr: np.ndarray, per_line: int = 24) -> str:
  flat = arr.ravel()
  if arr.dtype == np.float16:
    items = [str(v) for v in flat.view(np.uint16).tolist()]
  elif arr.dtype == np.float32:
    items = [f"{v:.9g}f" for v in flat.tolist()]
  else:
    items = [str(v) for v in flat.tolist()]
  return ",\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


_C_TYPES = {"int8": "int8_t", "float16": "uint16_t", "float32": "float"}

_FP16_HELPER = """\
/* fp16 bits -> float (the scales and the fp16 parameters are stored as their IEEE half bit patterns). */
static inline float embbert_fp16_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  union { uint32_t u; float f; } out;
  if (exp == 0 && man == 0) {
    bits = sign;
  } else if (exp == 0) {  /* subnormal: normalise */
    exp = 113;
    while (!(man & 0x400u)) { man <<= 1; exp--; }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  out.u = bits;
  return out.f;
}
"""


def c_header(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
  """model.h: #defines for the config and special ids, extern declarations, then the definitions."""
  c = manifest["config"]
  d, di = c["hidden"], int(c["hidden"] * c["conv_expansion"])
  est = manifest["memory_estimate"]
  defines = [
      ("EMBBERT_ARCH", f'"{c["arch"]}"', ""), ("EMBBERT_POLICY", f'"{manifest["policy"]}"', ""),
      ("EMBBERT_VOCAB_SIZE", c["vocab_size"], "V"), ("EMBBERT_MAX_LEN", c["max_len"], "L"),
      ("EMBBERT_HIDDEN", d, "d"), ("EMBBERT_EMBED_DIM", c["embed_dim"], "r"),
      ("EMBBERT_CONV_INNER", di, "d_i = int(d * e)"), ("EMBBERT_CONV_KERNEL", c["conv_kernel"], "k"),
      ("EMBBERT_NUM_LAYERS", c["num_layers"], "N"),
      ("EMBBERT_NUM_LABELS", c["num_labels"], "C; 1 = regression"),
      ("EMBBERT_NORM_EPS", f'{c["norm_eps"]:.9g}f', "RMSNorm epsilon"),
      ("EMBBERT_USE_ATTENTION", int(c["use_attention"]), ""), ("EMBBERT_USE_CONV", int(c["use_conv"]), ""),
      ("EMBBERT_RESIDUAL", int(c["residual"]), ""),
      ("EMBBERT_AGGREGATION_DIFFERENCE", int(c["aggregation"] == "difference"), "0: plain sum"),
      ("EMBBERT_HEAD_CLS", int(c["head"] == "cls"), "0: pooling (EMBBERT_HEAD_MEAN: mean, else RMS)"),
      ("EMBBERT_HEAD_MEAN", int(c["head"] == "mean_pool"), "1: mean pooling"),
      ("EMBBERT_LABEL_READOUT", int(c.get("label_readout", False)),
       "1: + readout x the mean of the token table's last column (C > 2 classes: last C columns, one per logit)"),
      *[(f"EMBBERT_{k.upper()}_ID", v, "") for k, v in manifest["special_ids"].items()],
      ("EMBBERT_QMAX", 127, "int8 values are in [-QMAX, QMAX]"),
      ("EMBBERT_WEIGHT_BYTES", manifest["weight_bytes"], "payload of the arrays below"),
      ("EMBBERT_ACTIVATION_BYTES_ESTIMATE", est["activation_bytes"], "memory module, batch 1, length L"),
  ]
  lines = [f"/* Generated by embbert_jax.export ({manifest['format']}); policy {manifest['policy']}: "
           f"{manifest['policy_description']}. */",
           "#ifndef EMBBERT_MODEL_H", "#define EMBBERT_MODEL_H", "", "#include <stdint.h>", ""]
  for name, value, note in defines:
    lines.append(f"#define {name} {value}" + (f"  /* {note} */" if note else ""))
  lines += ["", _FP16_HELPER]
  decls, defs = [], []
  for name, arr in arrays.items():
    ctype = _C_TYPES[str(arr.dtype)]
    cname, n = _c_name(name), arr.size
    note = f"/* {name}: {arr.dtype} {tuple(arr.shape)}"
    note += ", fp16 bits */" if arr.dtype == np.float16 else " */"
    decls.append(f"extern const {ctype} {cname}[{n}];  {note}")
    defs.append(f"const {ctype} {cname}[{n}] = {{\n{_c_values(arr)}\n}};")
  lines += decls + ["", "#ifndef EMBBERT_DECLARE_ONLY", *defs, "#endif  /* EMBBERT_DECLARE_ONLY */", "",
                    "#endif  /* EMBBERT_MODEL_H */", ""]
  return "\n".join(lines)


def export_npz(params: Any, cfg, out_dir: str | Path, *, policy: str = "int8", fmt: str = "npz",
               tokenizer_path: str | Path | None = None) -> dict[str, Any]:
  """Quantizes `params` under `policy` and writes model.npz and/or model.h (fmt npz, c-header or all),
  the manifest and the tokenizer; returns the manifest."""
  from embbert_jax import quantize
  if fmt not in NPZ_FORMATS:
    raise ValueError(f"format must be one of {', '.join(NPZ_FORMATS)}, not {fmt!r}")
  task = task_of(flatten_params(params), cfg)
  if task != "classify":
    raise CheckpointError("only a classifier can be exported; these params are "
                          + ("a pre-training model (MLM/NSP heads): fine-tune it first" if task else
                             "not the config's classifier"))
  out = Path(out_dir)
  tok_name = None
  if tokenizer_path is not None:
    tokenizer_path = Path(tokenizer_path)
    if not tokenizer_path.is_file():
      raise CheckpointError(f"tokenizer not found: {tokenizer_path}")
    _check_tokenizer(tokenizer_path, cfg)
    tok_name = TOKENIZER_FILE
  arrays = export_arrays(quantize.quantize_params(params, policy))
  manifest = build_manifest(cfg, policy, arrays, tok_name)
  expected = memory.estimate(cfg, policy).weight_bytes
  if manifest["weight_bytes"] != expected:  # by construction; a failure is a bug in quantize or memory
    raise AssertionError(f"exported {manifest['weight_bytes']} weight bytes, memory says {expected}")
  out.mkdir(parents=True, exist_ok=True)
  manifest["files"] = {}
  if fmt in ("npz", "all"):
    write_npz(out / MODEL_NPZ, arrays)
    manifest["files"]["npz"] = MODEL_NPZ
  if fmt in ("c-header", "all"):
    manifest["files"]["c-header"] = HEADER
    write_text_atomic(out / HEADER, c_header(manifest, arrays))
  if tok_name:
    write_bytes_atomic(out / tok_name, Path(tokenizer_path).read_bytes())
  write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
  return manifest


def _check_tokenizer(path: Path, cfg) -> None:
  """The tokenizer must load and produce ids below V (a smaller vocabulary than V is fine)."""
  import sentencepiece as spm
  try:
    pieces = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
  except (OSError, RuntimeError) as e:
    raise CheckpointError(f"cannot load tokenizer {path}: {e}") from None
  if pieces > cfg.vocab_size:
    raise CheckpointError(f"tokenizer {path} has {pieces} pieces, more than the model's vocab_size "
                          f"{cfg.vocab_size}")


def discover_labels(checkpoint: str | Path) -> tuple[list[str] | None, bool]:
  """(label names, add_cls) of a saved model: its own config.json's (save_model writes them), else from
  the training run around it: the run's config.json (the checkpoint's parent, e.g. WORKDIR/finetune)
  names the task, whose cached data gives the names (a model saved before its config held them)."""
  from embbert_jax import data
  p = Path(checkpoint)
  p = p.parent if p.is_file() else p
  for folder in (p, p.parent, p.parent.parent):
    f = folder / "config.json"
    if not f.is_file():
      continue
    try:
      run = json.loads(f.read_text())
    except json.JSONDecodeError:
      continue
    if "label_names" in run:
      return list(run["label_names"]), bool(run.get("add_cls", True))
    if "task" in run:
      try:
        # the split the task loads as (not the run's "seed": that is its training seed, not a split)
        task = data.load_task(run["task"], cache_dir=run.get("cache_dir") or None)
        return list(task.label_names), bool(run.get("add_cls", True))
      except Exception:  # a task that cannot be loaded here: fall back to numbered labels
        return None, bool(run.get("add_cls", True))
  return None, True
