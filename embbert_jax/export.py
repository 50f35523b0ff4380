"""Exports a saved model: int8 npz / C header, a C99 runtime folder, an ONNX graph or a LiteRT flatbuffer.

    python -m embbert_jax.export CHECKPOINT --format npz|c-header|all --policy int8|int8_full --out DIR \
        [--tokenizer PATH]

CHECKPOINT is a directory written by `save_model` (params.npz, config.json, the tokenizer beside them).
`--format npz|c-header|all` writes the export directory of `artifacts` (model.npz and/or model.h,
manifest.json, tokenizer.model). `--format c` adds a C99 runtime folder (`export_c`: make, then
`./embbert < texts`), `--format onnx` an ONNX graph (`export_onnx`) and `--format tflite` a LiteRT
flatbuffer (`export_tflite`); the last two and `tokenizer.json` need optional packages (the `export` extra).

Layering: `artifacts` (saved models, the npz/C-header export, their file names) is the core that the format
modules and `predict` import; this module imports them all and is imported by none of them. It re-exports
the core's names, so `export.save_model`, `export.load_model`, `export.MANIFEST`, ... keep working.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from embbert_jax import cli as cli_lib, memory
from embbert_jax.files import unwritable
from embbert_jax.artifacts import (
    CONFIG_FILE, EXPORT_FORMAT, HEADER, MANIFEST, MODEL_FORMAT, MODEL_NPZ, PARAMS_FILE, SCALE_SUFFIX,
    TOKENIZER_FILE, CheckpointError, ExportError, build_manifest, c_header, discover_labels, export_arrays,
    export_npz, flatten_params, load_model, save_model, task_of, unflatten_params)

__all__ = [  # the dispatcher and CLI, and the core's names re-exported for existing callers
    "FORMATS", "export", "cli", "discover_texts", "main",
    "CONFIG_FILE", "EXPORT_FORMAT", "HEADER", "MANIFEST", "MODEL_FORMAT", "MODEL_NPZ", "PARAMS_FILE",
    "SCALE_SUFFIX", "TOKENIZER_FILE", "CheckpointError", "ExportError", "build_manifest", "c_header",
    "discover_labels", "export_arrays", "export_npz", "flatten_params", "load_model", "save_model", "task_of",
    "unflatten_params",
]

FORMATS = ("npz", "c-header", "all", "c", "onnx", "tflite")


def export(params: Any, cfg, out_dir: str | Path, *, policy: str = "int8", fmt: str = "npz",
           tokenizer_path: str | Path | None = None) -> dict[str, Any]:
  """Quantizes `params` under `policy` and writes the export directory; returns the manifest."""
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
  if fmt == "c":  # the C99 runtime folder (export_c), with the npz export beside it
    from embbert_jax import export_c
    return export_c.export_c(params, cfg, out_dir, policy=policy, tokenizer_path=tokenizer_path)
  if fmt == "onnx":  # the float graph for onnxruntime (export_onnx; needs the export extra)
    from embbert_jax import export_onnx
    return export_onnx.export_onnx(params, cfg, out_dir, tokenizer_path=tokenizer_path)
  if fmt == "tflite":  # a LiteRT flatbuffer of builtin ops (export_tflite; needs tensorflow-cpu)
    from embbert_jax import export_tflite
    return export_tflite.export_tflite(params, cfg, out_dir, policy=policy, tokenizer_path=tokenizer_path)
  return export_npz(params, cfg, out_dir, policy=policy, fmt=fmt, tokenizer_path=tokenizer_path)


def cli(args, params: Any, cfg, tok) -> int:
  """`export --format c|onnx|tflite`: label names and [CLS] from the training run, then the export and a
  one-line summary; 2 with one error line for a missing optional package or unusable input."""
  from embbert_jax import export_c, export_onnx
  labels, add_cls = discover_labels(args.checkpoint)
  labels = args.labels.split(",") if args.labels else labels
  if args.format == "tflite":
    return _cli_tflite(args, params, cfg, tok, labels, add_cls)
  if args.format == "onnx":
    try:
      m = export_onnx.export_onnx(params, cfg, args.out, tokenizer_path=tok, label_names=labels, add_cls=add_cls)
    except ImportError as e:
      print(f"error: --format onnx needs the export extra (pip install 'embbert_jax[export]'): {e}",
            file=sys.stderr)
      return 2
    print(f"wrote {args.out}: {', '.join(m['files'])}; onnxruntime vs JAX max |diff| "
          f"{m['onnxruntime_vs_jax_max_abs']:.3g}; ops: {' '.join(m['ops'])}")
    return 0
  c = export_c.export_c(params, cfg, args.out, policy=args.policy, tokenizer_path=tok, label_names=labels,
                       add_cls=add_cls)["c"]
  print(f"wrote {args.out} (policy {args.policy}): C runtime, model.npz, manifest.json. Flash {c['weight_bytes']} B "
        f"weights + {c['tokenizer_bytes']} B tokenizer tables; RAM {c['arena_bytes']} B arena (rule "
        f"{c['arena_vs_rule']['rule_activation_bytes']} B) + {c['tokenizer_ram_bytes']} B tokenizer buffers; "
        f"weights + arena {c['weights_plus_arena_bytes']} B. Build: make -C {args.out}")
  return 0


def _cli_tflite(args, params, cfg, tok, labels, add_cls) -> int:
  """--format tflite: calibration/check texts from --calibration-file or the run's task."""
  from embbert_jax import predict
  from embbert_jax import tokenizer as tk
  import importlib.util
  from embbert_jax import export_tflite
  missing = [m for m in ("tensorflow", "ai_edge_litert") if importlib.util.find_spec(m) is None]
  if missing:
    print(f"error: --format tflite needs tensorflow-cpu and ai-edge-litert (missing: {', '.join(missing)})",
          file=sys.stderr)
    return 2
  texts = predict.read_texts(args.calibration_file) if args.calibration_file else discover_texts(
      args.checkpoint)
  if not texts or tok is None:
    print("error: --format tflite needs the tokenizer and texts to calibrate/check on: pass "
          "--calibration-file (the run's task could not be loaded)", file=sys.stderr)
    return 2
  ids = tk.Tokenizer(tok).encode_batch(texts[:256], max_len=cfg.max_len, add_cls=add_cls)
  manifest = export_tflite.export_tflite(params, cfg, args.out, policy=args.policy, tokenizer_path=tok,
                                         label_names=labels, add_cls=add_cls, check_ids=ids)
  print(f"wrote {args.out}: {', '.join(manifest['files'])} ({manifest['bytes']} B, policy {args.policy}); "
        f"LiteRT vs JAX labels {manifest['litert_vs_jax_label_agreement']:.3f} on {len(ids)} texts; "
        f"builtin ops to register: {' '.join(manifest['builtin_ops'])}")
  return 0


def discover_texts(checkpoint: str | Path, n: int = 256) -> list[str]:
  """The first n training texts of the run's task (for calibration), or [] if it cannot be loaded."""
  from embbert_jax import data
  p = Path(checkpoint)
  for folder in (p, p.parent, p.parent.parent):
    f = folder / "config.json"
    if f.is_file():
      try:
        run = json.loads(f.read_text())
        if "task" in run:
          return list(data.load_task(run["task"], cache_dir=run.get("cache_dir") or None).train.text[:n])
      except Exception:  # no data here: the caller asks for a file instead
        return []
  return []


def main(argv: list[str] | None = None) -> int:
  ap = cli_lib.parser("python -m embbert_jax.export", __doc__.split("\n\n")[0])
  ap.add_argument("checkpoint", help="directory written by embbert_jax.export.save_model (or its params.npz)")
  ap.add_argument("--format", default="npz", choices=FORMATS,
                  help="npz, c-header, all, c (a C99 runtime folder: make, then ./embbert < texts), "
                       "onnx (fp32 graph + tokenizer.json; needs the export extra) or tflite (--policy fp32 "
                       "or int8; needs tensorflow-cpu and ai-edge-litert)")
  ap.add_argument("--policy", default="int8", choices=tuple(memory.POLICIES),
                  help="int8 (paper: Dense kernels int8) or int8_full (also tables and conv kernels)")
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--tokenizer", default=None, help="sentencepiece .model (default: the checkpoint's)")
  ap.add_argument("--calibration-file", default=None,
                  help="--format tflite --policy int8: texts (one per line) to calibrate and check on "
                       "(default: the first 256 training texts of the run's task)")
  ap.add_argument("--labels", default=None,
                  help="--format c/onnx: comma-separated label names (default: the saved model's, else "
                       "the training run's task's, else 0, 1, ...)")
  args = ap.parse_args(argv)
  why = unwritable(args.out, folder=True)  # before the work, not after it
  if why:
    print(f"error: --out {why}", file=sys.stderr)
    return 2
  try:
    params, cfg, tok = load_model(args.checkpoint)
    if args.format in ("c", "onnx", "tflite"):
      return cli(args, params, cfg, args.tokenizer or tok)
    manifest = export(params, cfg, args.out, policy=args.policy, fmt=args.format,
                      tokenizer_path=args.tokenizer or tok)
  except (CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # a full disk, a folder made read-only meanwhile: a failure, not bad input
    print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
    return 1
  est = manifest["memory_estimate"]
  files = ", ".join([*manifest["files"].values(), MANIFEST])
  print(f"wrote {args.out}: {files}; policy {manifest['policy']}: "
        f"weights {memory.format_bytes(manifest['weight_bytes'])} ({manifest['weight_bytes']} B), "
        f"activations {memory.format_bytes(est['activation_bytes'])}, "
        f"total {memory.format_bytes(est['total_bytes'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
