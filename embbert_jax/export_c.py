"""The C99 export: a folder that `make` turns into a text-in, label-out program, no malloc, one static arena.

    python -m embbert_jax.export RUN --format c --out DIR [--policy int8|fp32|...] [--labels a,b]

writes, beside the npz export (model.npz, manifest.json, tokenizer.model, which reference.py reads):

- `embbert.h`, `embbert.c`, `embbert_tokenizer.c`, `main.c`, `Makefile`: the runtime, copied from the
  package's `cruntime/` folder unchanged (gcc or clang, -std=c99 -Wall -Wextra -Werror, libm's expf/sqrtf).
- `embbert_model.h`: the config as #defines and the arena plan (offsets of every buffer).
- `embbert_weights.c`: the tensors in the policy's storage (int8 + fp16 scales, fp16 bits, or f32), Dense
  kernels output-major ([out][in], as TFLite and CMSIS-NN), 16-byte aligned, and the label names.
- `embbert_tokenizer_data.c`: the pieces, their sorted index and the normalisation table generated from
  `data.normalize_text` (see embbert_tokenizer.c for the algorithm).
- `tokenizer.json` (when the `tokenizers` package is installed; `export_tokenizer`): the same tokenizer for
  Hugging Face `tokenizers`, self-contained (the normalisation table compiled into a `Precompiled` charsmap).

Memory, reported in manifest["c"]:
- flash: the weights (`weight_bytes`) and the tokenizer tables (`tokenizer_bytes`), separately.
- RAM: the arena (`arena_bytes`) = the memory rule's activation terms (R0..R3 of `arena_plan`, at n = L) +
  a few rows of scratch; `plan_vs_rule` names every term by which it differs from
  `memory.estimate(cfg, policy).activation_bytes`. The tokenizer's buffers (`tokenizer_ram_bytes`) are
  static arrays outside the arena.
The weights differ from `memory.estimate(...).weight_bytes` by one named term only: an EmbBERT layer's
four lambda vectors (4 d values) are replaced by the two f32 numbers lambda = exp(<l_q, l_k>) they define,
computed here with the reference's own NumPy expression so C and NumPy read the same number.
"""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from embbert_jax import artifacts, configs, export_tokenizer, memory
from embbert_jax.artifacts import ExportError

C_FORMAT = "embbert_jax.c/1"
TEMPLATES = ("embbert.h", "embbert.c", "embbert_tokenizer.c", "main.c", "Makefile")
ALIGN = 16
WORD_MAX = 256  # characters per word in the C tokenizer's buffer (a longer word is cut into chunks)
SUPPORTED_ARCHS = ("embbert", "embedder", "embedder_conv")
_TYPE = {"float32": "EMBBERT_F32", "float16": "EMBBERT_F16", "int8": "EMBBERT_I8"}
_CTYPE = {"float32": "float", "float16": "uint16_t", "int8": "int8_t"}


def _align(n: int) -> int:
  return -(-n // ALIGN) * ALIGN


def act_bytes(policy: str) -> int:
  """Bytes of one stored activation in the runtime: f32 for fp32, else fp16 (as reference.py: int8
  activation storage would need calibrated ranges the export does not carry)."""
  return 4 if memory.get_policy(policy).activation >= 4 else 2


def _dense_fan_ins(cfg) -> list[int]:
  ins = [cfg.hidden]
  if cfg.embedder == "nano":
    ins.append(cfg.embed_dim)
  if cfg.arch == "embbert":
    ins += [cfg.hidden] * cfg.use_attention + [configs.conv_inner(cfg)] * cfg.use_conv
  return ins


def arena_plan(cfg, policy: str) -> list[dict[str, Any]]:
  """Every arena buffer: name, offset, bytes (16-aligned), what it holds, and the memory-rule term it is."""
  a, L, d = act_bytes(policy), cfg.max_len, cfg.hidden
  pol = memory.get_policy(policy)
  max_in = max(_dense_fan_ins(cfg))
  any_int8 = memory.is_quantized(pol, memory.DENSE)
  row = max(d, cfg.embed_dim if cfg.embedder == "nano" else 0, cfg.num_labels)
  bufs = [("XF", 4 * max_in, "the Dense input as f32 (one row)", "scratch"),
          ("XQ", max_in if any_int8 else 0, "its int8 copy (one row)", "scratch"),
          ("ROW", a * row, "one row: table row, q_t, P.u_t, s_t, logits", "scratch"),
          ("R0", a * L * d, "x / u (layer input, RMSNorm in place)", "L*d")]
  if cfg.arch == "embbert" or cfg.arch == "embedder_conv":
    bufs.append(("R1", a * L * d, "the layer output (a_t, then y_t in place)", "L*d"))
  if cfg.arch == "embbert":
    s2 = max(L * L if cfg.use_attention else 0, L * configs.conv_inner(cfg) if cfg.use_conv else 0)
    bufs.append(("R2", a * s2, "all probability rows, then the conv output", "max(L^2, L*d_i)"))
    if cfg.residual:
      bufs.append(("R3", a * L * d, "u while the residual keeps x", "L*d"))
  out, off = [], 0
  for name, nbytes, what, term in bufs:
    out.append({"name": name, "offset": off, "bytes": _align(nbytes), "holds": what, "term": term})
    off += _align(nbytes)
  return out


def plan_vs_rule(cfg, policy: str) -> dict[str, Any]:
  """The arena against memory.estimate's activation bytes, every difference named."""
  plan = arena_plan(cfg, policy)
  est = memory.estimate(cfg, policy)
  rule = est.activation_bytes
  regions = sum(b["bytes"] for b in plan if b["term"] != "scratch")
  scratch = sum(b["bytes"] for b in plan if b["term"] == "scratch")
  a, d = act_bytes(policy), cfg.hidden
  notes = []
  if a != memory.get_policy(policy).activation:
    notes.append(f"activations stored in {a} B (fp16), the policy prices {memory.get_policy(policy).activation} B")
  if cfg.arch == "embbert" and cfg.use_attention and cfg.use_conv:
    di = configs.conv_inner(cfg)
    if di > d:
      notes.append("the conv output (L*d_i) overwrites the probability map (L^2): 2*L*d + max(L^2, L*d_i) "
                   "values instead of the rule's L^2 + L*d + L*d_i")
  stages = est.stage_activations
  if cfg.arch in ("embedder", "embedder_conv"):
    notes.append(f"the embedder writes each row's token + position + segment sum straight into R0: "
                 f"no second L*d buffer and no L*r position rows (rule stage {stages['embedder']} values)")
  return {"rule_activation_bytes": rule, "arena_region_bytes": regions, "arena_scratch_bytes": scratch,
          "arena_bytes": regions + scratch, "region_minus_rule_bytes": regions - rule, "notes": notes}


# --------------------------------------------------------------------------------------- C emission


def _values(arr: np.ndarray, per_line: int = 20) -> str:
  flat = np.ascontiguousarray(arr).ravel()
  if flat.dtype == np.float32:
    items = [f"{v:.9e}f" for v in flat.tolist()]
  elif flat.dtype == np.float16:
    items = [str(v) for v in flat.view(np.uint16).tolist()]
  else:
    items = [str(v) for v in flat.tolist()]
  if not items:
    items = ["0"]
  return ",\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def _int_array(ctype: str, name: str, values, align: bool = False) -> str:
  arr = np.asarray(values).ravel()
  return (f"const {ctype} {name}[{max(len(arr), 1)}]{' EMBBERT_ALIGNED' if align else ''} = {{\n"
          f"{_values(arr)}\n}};\n")


class _Weights:
  """Collects the C arrays of the tensors and the descriptors that point at them."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays, self.defs, self.payload, self.used = arrays, [], 0, set()

  def array(self, arr: np.ndarray, label: str) -> str:
    name = f"w{len(self.defs)}"
    self.defs.append(f"/* {label}: {arr.dtype} {tuple(arr.shape)} */\nstatic const {_CTYPE[str(arr.dtype)]} "
                     f"{name}[{arr.size}] EMBBERT_ALIGNED = {{\n{_values(arr)}\n}};\n")
    self.payload += arr.nbytes
    return name

  def tensor(self, path: str, transform=lambda a: a) -> str:
    """A descriptor {data, scale, type} for the tensor at `path` (or an empty one if absent)."""
    if path not in self.arrays:
      return "{NULL, NULL, EMBBERT_F32}"
    self.used.add(path)
    arr = transform(self.arrays[path])
    data = self.array(arr, path)
    scale = "NULL"
    if path + ".scale" in self.arrays:
      self.used.add(path + ".scale")
      scale = self.array(self.arrays[path + ".scale"], path + ".scale")
    return f"{{{data}, {scale}, {_TYPE[str(arr.dtype)]}}}"

  def dense(self, prefix: str) -> str:
    if prefix + "/kernel" not in self.arrays:
      return "{{NULL, NULL, EMBBERT_F32}, {NULL, NULL, EMBBERT_F32}, 0, 0}"
    fan_in, out = self.arrays[prefix + "/kernel"].shape
    kernel = self.tensor(prefix + "/kernel", lambda a: np.ascontiguousarray(a.T))  # output-major
    return f"{{{kernel}, {self.tensor(prefix + '/bias')}, {fan_in}, {out}}}"


def _conv_2d(a: np.ndarray) -> np.ndarray:
  return a.reshape(a.shape[0], a.shape[2])


def lambdas(arrays: dict[str, np.ndarray], prefix: str) -> tuple[np.float32, np.float32]:
  """exp(<l_q1, l_k1>), exp(<l_q2, l_k2>) with reference.py's own expression (f32 operands)."""
  g = lambda n: arrays[f"{prefix}/aggregate/{n}"].astype(np.float32)
  return np.exp(g("lambda_q1") @ g("lambda_k1")), np.exp(g("lambda_q2") @ g("lambda_k2"))


def weights_c(cfg, arrays: dict[str, np.ndarray], label_names: list[str]) -> tuple[str, int]:
  """embbert_weights.c and its payload bytes."""
  w = _Weights(arrays)
  e = "encoder/embedder"
  fields = [f".token = {w.tensor(f'{e}/token/embedding')}", f".position = {w.tensor(f'{e}/position/embedding')}",
            f".segment = {w.tensor(f'{e}/segment/embedding')}", f".token_proj = {w.dense(f'{e}/token_proj')}",
            f".position_proj = {w.dense(f'{e}/position_proj')}",
            f".conv_kernel = {w.tensor('encoder/conv/kernel', _conv_2d)}",
            f".conv_bias = {w.tensor('encoder/conv/bias')}"]
  layers = []
  extra = 0
  for i in range(cfg.num_layers if cfg.arch == "embbert" else 0):
    p = f"encoder/layer_{i}"
    lam1 = lam2 = np.float32(1.0)
    if f"{p}/aggregate/lambda_q1" in arrays:
      lam1, lam2 = lambdas(arrays, p)
      w.used.update(f"{p}/aggregate/{n}" for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"))
      extra += 8
    layers.append(
        f"    {{ /* layer {i} */\n      .norm = {w.tensor(f'{p}/norm/scale')},\n"
        f"      .q = {w.dense(f'{p}/attention/q')},\n      .out = {w.dense(f'{p}/attention/out')},\n"
        f"      .proj = {w.dense(f'{p}/conv_branch/proj')},\n"
        f"      .conv_kernel = {w.tensor(f'{p}/conv_branch/conv/kernel', _conv_2d)},\n"
        f"      .conv_bias = {w.tensor(f'{p}/conv_branch/conv/bias')},\n"
        f"      .lambda1 = {float(lam1):.9e}f, .lambda2 = {float(lam2):.9e}f}}")
  if layers:
    fields.append(".layers = {\n" + ",\n".join(layers) + "\n  }")
  fields.append(f".head = {w.dense('head/dense')}")
  fields.append(f".readout = {w.tensor('head/readout')}")
  missing = set(arrays) - w.used
  if missing:
    raise ExportError(f"the C runtime does not use the tensors {sorted(missing)[:3]}: unsupported config")
  labels = ", ".join(json.dumps(n) for n in label_names)
  text = ("/* Generated by embbert_jax.export_c: the model's tensors (see embbert.h for the layouts). */\n"
          "#include \"embbert.h\"\n\n#if defined(__GNUC__) || defined(__clang__)\n"
          "#define EMBBERT_ALIGNED __attribute__((aligned(16)))\n#else\n#define EMBBERT_ALIGNED\n#endif\n\n"
          + "\n".join(w.defs)
          + "\nconst embbert_model_t embbert_model = {\n  " + ",\n  ".join(fields) + "\n};\n\n"
          + f"const char *const embbert_label_names[EMBBERT_NUM_LABELS] = {{{labels}}};\n")
  return text, w.payload + extra


def tokenizer_c(t: dict[str, Any]) -> tuple[str, int]:
  """embbert_tokenizer_data.c and its bytes."""
  off_t = "uint16_t" if t["offsets"][-1] < 65536 else "uint32_t"
  id_t = "uint16_t" if t["pieces"] < 65536 else "uint32_t"
  parts = [
      _int_array("uint8_t", "embbert_tok_bytes", list(t["bytes"])),
      _int_array(off_t, "embbert_tok_offsets", t["offsets"]),
      _int_array(id_t, "embbert_tok_sorted", t["sorted"]),
      _int_array("uint32_t", "embbert_norm_cp", t["norm_cp"]),
      _int_array("uint16_t", "embbert_norm_offsets", t["norm_offsets"]),
      _int_array("uint8_t", "embbert_norm_bytes", list(t["norm_bytes"])),
      _int_array("uint32_t", "embbert_norm_deleted", [x for r in t["deleted"] for x in r]),
  ]
  nbytes = (len(t["bytes"]) + len(t["offsets"]) * (2 if off_t == "uint16_t" else 4)
            + len(t["sorted"]) * (2 if id_t == "uint16_t" else 4) + 4 * len(t["norm_cp"])
            + 2 * len(t["norm_offsets"]) + len(t["norm_bytes"]) + 8 * len(t["deleted"]))
  text = ("/* Generated by embbert_jax.export_c: tokenizer tables (pieces with U+2581 as ' ', the sorted index of "
          "the normal pieces, the normalisation table). */\n#include \"embbert.h\"\n\n" + "\n".join(parts))
  return text, nbytes


def tokenizer_ram_bytes(cfg) -> int:
  """The C tokenizer's static buffers (word bytes, five per-symbol arrays) plus the ids (int32 x L)."""
  return (WORD_MAX * 4 + 1) + (WORD_MAX + 1) * (2 + 2 + 2 + 2 + 4) + 4 * cfg.max_len


def model_h(cfg, policy: str, plan: list[dict[str, Any]], t: dict[str, Any], add_cls: bool) -> str:
  c = cfg
  pol = memory.get_policy(policy)
  arena = plan[-1]["offset"] + plan[-1]["bytes"]
  off_t = "uint16_t" if t["offsets"][-1] < 65536 else "uint32_t"
  id_t = "uint16_t" if t["pieces"] < 65536 else "uint32_t"
  embbert = c.arch == "embbert"
  defines = [
      ("EMBBERT_POLICY", f'"{pol.name}"'), ("EMBBERT_ARCH", f'"{c.arch}"'),
      ("EMBBERT_ACT_FP16", int(act_bytes(policy) == 2)),
      ("EMBBERT_VOCAB_SIZE", c.vocab_size), ("EMBBERT_MAX_LEN", c.max_len), ("EMBBERT_HIDDEN", c.hidden),
      ("EMBBERT_EMBED_DIM", c.embed_dim), ("EMBBERT_CONV_INNER", configs.conv_inner(c)),
      ("EMBBERT_CONV_KERNEL", c.conv_kernel), ("EMBBERT_NUM_LAYERS", c.num_layers if embbert else 0),
      ("EMBBERT_NUM_LABELS", c.num_labels),
      ("EMBBERT_ARCH_EMBEDDER_CONV", int(c.arch == "embedder_conv")),
      ("EMBBERT_USE_ATTENTION", int(embbert and c.use_attention)),
      ("EMBBERT_USE_CONV", int(embbert and c.use_conv)), ("EMBBERT_RESIDUAL", int(embbert and c.residual)),
      ("EMBBERT_AGGREGATION_DIFFERENCE", int(c.aggregation == "difference")),
      ("EMBBERT_HEAD_CLS", int(c.head == "cls")), ("EMBBERT_HEAD_MEAN", int(c.head == "mean_pool")),
      ("EMBBERT_LABEL_READOUT", int(c.label_readout)),
      ("EMBBERT_NORM_EPS", f"{float(np.float32(c.norm_eps)):.9e}f"),
      ("EMBBERT_SQRT_HIDDEN", f"{float(np.float32(math.sqrt(c.hidden))):.9e}f"),
      ("EMBBERT_ADD_CLS", int(add_cls)),
      *[(f"EMBBERT_{k}_ID", v) for k, v in (("PAD", configs.PAD_ID), ("UNK", configs.UNK_ID),
                                            ("CLS", configs.CLS_ID), ("SEP", configs.SEP_ID))],
      *[(f"EMBBERT_OFF_{b['name']}", b["offset"]) for b in plan],
      ("EMBBERT_ARENA_BYTES", arena),
      ("EMBBERT_TOK_PIECES", t["pieces"]), ("EMBBERT_TOK_NORMAL", len(t["sorted"])),
      ("EMBBERT_NORM_MAPS", len(t["norm_cp"])), ("EMBBERT_NORM_DELETED", len(t["deleted"])),
  ]
  for name in ("R1", "R2", "R3"):
    if name not in {b["name"] for b in plan}:
      defines.append((f"EMBBERT_OFF_{name}", 0))
  lines = [f"/* Generated by embbert_jax.export_c ({C_FORMAT}): {c.arch}, policy {pol.name}. */",
           "#ifndef EMBBERT_MODEL_H", "#define EMBBERT_MODEL_H", "", "#include <stdint.h>", ""]
  lines += [f"#define {k} {v}" for k, v in defines]
  lines += ["", "/* Arena plan (bytes, n = L):"]
  lines += [f" *   {b['name']:4s} @ {b['offset']:8d}  {b['bytes']:8d}  {b['term']:16s} {b['holds']}" for b in plan]
  lines += [" */", "", "#ifndef EMBBERT_WORD_MAX", f"#define EMBBERT_WORD_MAX {WORD_MAX}", "#endif", "",
            "extern const uint8_t embbert_tok_bytes[];", f"extern const {off_t} embbert_tok_offsets[];",
            f"extern const {id_t} embbert_tok_sorted[];", "extern const uint32_t embbert_norm_cp[];",
            "extern const uint16_t embbert_norm_offsets[];", "extern const uint8_t embbert_norm_bytes[];",
            "extern const uint32_t embbert_norm_deleted[];", "", "#endif /* EMBBERT_MODEL_H */", ""]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------- export


def check_supported(cfg, policy: str) -> None:
  if cfg.arch not in SUPPORTED_ARCHS:
    raise ExportError(f"the C runtime runs arch {', '.join(SUPPORTED_ARCHS)}, not {cfg.arch!r}")
  if cfg.embedder != "nano":
    raise ExportError("the C runtime implements the Nano Embedder only (embedder='nano')")
  published = [f for f in ("attend_to_pad", "pool_over_pad") if getattr(cfg, f, False)]
  if published:
    raise ExportError(f"the C runtime masks padding; a model trained with {published[0]}=true would "
                      "compute something else there: retrain without it to export")
  memory.get_policy(policy)


def export_c(params: Any, cfg, out_dir: str | Path, *, policy: str = "int8",
             tokenizer_path: str | Path | None = None, label_names: list[str] | None = None,
             add_cls: bool = True) -> dict[str, Any]:
  """Writes the C folder (and the npz export beside it); returns the manifest with its "c" section."""
  from embbert_jax import data, quantize
  check_supported(cfg, policy)
  if tokenizer_path is None:
    raise ExportError("the C export needs the tokenizer: the checkpoint names none, pass --tokenizer")
  labels = list(label_names) if label_names else (
      [str(i) for i in range(cfg.num_labels)] if cfg.num_labels > 1 else ["value"])
  if len(labels) != cfg.num_labels or any(not n or any(ch.isspace() for ch in n) for n in labels):
    raise ExportError(f"need {cfg.num_labels} label names without whitespace, got {labels}")
  out = Path(out_dir)
  manifest = artifacts.export_npz(params, cfg, out, policy=policy, fmt="npz", tokenizer_path=tokenizer_path)
  arrays = artifacts.export_arrays(quantize.quantize_params(params, policy))
  tables = export_tokenizer.tokenizer_tables(Path(tokenizer_path))
  if tables["pieces"] > cfg.vocab_size:
    raise ExportError(f"the tokenizer has {tables['pieces']} pieces, more than vocab_size {cfg.vocab_size}")
  plan = arena_plan(cfg, policy)
  weights_text, weight_bytes = weights_c(cfg, arrays, labels)
  tok_text, tok_bytes = tokenizer_c(tables)
  files = {"embbert_model.h": model_h(cfg, policy, plan, tables, add_cls), "embbert_weights.c": weights_text,
           "embbert_tokenizer_data.c": tok_text}
  try:  # the tokenizer for Hugging Face users (optional: the `export` extra)
    files["tokenizer.json"] = export_tokenizer.hf_tokenizer(tokenizer_path, cfg.max_len,
                                                            add_cls).to_str(pretty=False)
  except ImportError:
    print("note: tokenizers is not installed (pip install 'embbert_jax[export]'): no tokenizer.json",
          file=sys.stderr)
  for name, text in files.items():
    data.write_text_atomic(out / name, text)
  src = Path(__file__).with_name("cruntime")
  for name in TEMPLATES:
    data.write_text_atomic(out / name, (src / name).read_text())
  est = memory.estimate(cfg, policy)
  lam_vectors = sum(a.nbytes for k, a in arrays.items() if "/aggregate/lambda_" in k)
  lam_layers = sum(1 for k in arrays if k.endswith("/aggregate/lambda_q1"))
  rule = plan_vs_rule(cfg, policy)
  manifest["c"] = {
      "format": C_FORMAT, "labels": labels, "add_cls": add_cls, "activation_bytes_per_value": act_bytes(policy),
      "weight_bytes": weight_bytes, "rule_weight_bytes": est.weight_bytes,
      "weight_differences": ([f"{lam_layers} layer(s): 4 lambda vectors ({lam_vectors} B in all) replaced by "
                              f"2 f32 lambdas each ({8 * lam_layers} B)"] if lam_layers else []),
      "arena_bytes": rule["arena_bytes"], "arena_plan": plan, "arena_vs_rule": rule,
      "flash_bytes": weight_bytes, "ram_bytes": rule["arena_bytes"],
      "weights_plus_arena_bytes": weight_bytes + rule["arena_bytes"],
      "tokenizer_bytes": tok_bytes, "tokenizer_ram_bytes": tokenizer_ram_bytes(cfg), "word_max": WORD_MAX,
      "tokenizer": {"pieces": tables["pieces"], "normal_pieces": len(tables["sorted"]),
                    "known_characters": tables["known_chars"], "normaliser_mappings": len(tables["norm_cp"]),
                    "normaliser_deleted_ranges": len(tables["deleted"]),
                    "unicodedata_version": unicodedata.unidata_version},
      "files": [*files, *TEMPLATES],
  }
  manifest["files"]["c"] = "Makefile"
  data.write_text_atomic(out / artifacts.MANIFEST, json.dumps(manifest, indent=1) + "\n")
  return manifest
