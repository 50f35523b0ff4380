"""`--format tflite`: the classifier as a LiteRT / TFLite flatbuffer of builtin ops (jax2tf), fp32 and int8.

    python -m embbert_jax.export RUN --format tflite --policy fp32|int8 --out DIR

writes `model.tflite` (input `input_ids` int32 [1, L], right-padded with 0; output `logits` float32 [1, C]),
`tokenizer.json`, and `manifest.json` with the builtin ops a TFLite Micro user must register
(`MicroMutableOpResolver`), LiteRT's agreement with JAX and the flatbuffer's size. The graph is traced
with jax2tf's non-native lowering (`enable_xla=False`), so it holds TFLite builtins only (no Flex, no
XlaCallModule); the conv runs as shifted multiply-adds. `int8` is LiteRT's post-training quantization
calibrated on the given token ids (real text, not random ids): int8 weights and activations where the
op has an int8 kernel, float elsewhere. EmbBERT-Q's fp16 activations have no TFLite Micro form.
Needs tensorflow-cpu and ai-edge-litert (installed apart from the `export` extra: they are large).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TFLITE_FORMAT = "embbert_jax.tflite/1"
TFLITE_FILE = "model.tflite"


def tflite_model(params: Any, cfg, policy: str = "fp32", calibration_ids: np.ndarray | None = None) -> bytes:
  import jax
  import tensorflow as tf
  from jax.experimental import jax2tf
  from embbert_jax import models
  c = cfg.copy_and_resolve_references()
  c.conv_impl = "shift"
  model = models.build_model(c)
  fn = lambda ids: model.apply({"params": params}, ids)
  tf_fn = tf.function(jax2tf.convert(fn, with_gradient=False, native_serialization=False, enable_xla=False),
                      autograph=False, input_signature=[tf.TensorSpec((1, c.max_len), tf.int32, name="input_ids")])
  conv = tf.lite.TFLiteConverter.from_concrete_functions([tf_fn.get_concrete_function()], tf_fn)
  conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if policy == "int8":
    if calibration_ids is None or not len(calibration_ids):
      raise ValueError("int8 needs calibration token ids (real tokenised text)")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([row[None].astype(np.int32)] for row in calibration_ids)
  elif policy != "fp32":
    raise ValueError(f"--format tflite takes policy fp32 or int8, not {policy!r}")
  del jax
  return conv.convert()


def builtin_ops(blob: bytes) -> list[str]:
  """Names of the builtin operators of a flatbuffer (what a TFLite Micro resolver must register)."""
  from ai_edge_litert.interpreter import Interpreter
  it = Interpreter(model_content=blob)
  return sorted({op["op_name"] for op in it._get_ops_details()})


def run_litert(blob: bytes, ids: np.ndarray) -> np.ndarray:
  from ai_edge_litert.interpreter import Interpreter
  it = Interpreter(model_content=blob)
  it.allocate_tensors()
  inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
  rows = []
  for row in ids:
    it.set_tensor(inp, row[None].astype(np.int32))
    it.invoke()
    rows.append(it.get_tensor(out)[0].copy())
  return np.stack(rows)


def export_tflite(params: Any, cfg, out_dir: str | Path, *, policy: str = "fp32",
                  tokenizer_path: str | Path | None = None, label_names: list[str] | None = None,
                  add_cls: bool = True, check_ids: np.ndarray | None = None) -> dict[str, Any]:
  """Writes model.tflite (+ tokenizer.json, manifest.json); check_ids (real text) calibrate int8 and
  measure LiteRT vs JAX label agreement (random ids when none are given: fp32 only)."""
  import jax.numpy as jnp
  from embbert_jax import configs, data, export_tokenizer, models
  from embbert_jax import files as files_lib
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if check_ids is None:
    rng = np.random.RandomState(0)
    check_ids = rng.randint(5, cfg.vocab_size, (16, cfg.max_len)).astype(np.int32)
    check_ids[:, 0] = configs.CLS_ID
    for i, n in enumerate(rng.randint(1, cfg.max_len + 1, 16)):
      check_ids[i, n:] = 0
  blob = tflite_model(params, cfg, policy, check_ids)
  got = run_litert(blob, check_ids)
  want = np.asarray(models.build_model(cfg).apply({"params": params}, jnp.asarray(check_ids)))
  files_lib.write_bytes_atomic(out / TFLITE_FILE, blob)
  files = [TFLITE_FILE]
  if tokenizer_path is not None:
    try:
      hf = export_tokenizer.hf_tokenizer(tokenizer_path, cfg.max_len, add_cls)
      data.write_text_atomic(out / "tokenizer.json", hf.to_str(pretty=False))
      files.append("tokenizer.json")
    except ImportError:
      pass
  labels = list(label_names) if label_names else [str(i) for i in range(cfg.num_labels)]
  manifest = {"format": TFLITE_FORMAT, "config": cfg.to_dict(), "policy": policy, "labels": labels,
              "add_cls": add_cls, "inputs": {"input_ids": ["int32", [1, cfg.max_len]]},
              "outputs": {"logits": ["float32", [1, cfg.num_labels]]}, "builtin_ops": builtin_ops(blob),
              "litert_vs_jax_max_abs": float(np.abs(got - want).max()),
              "litert_vs_jax_label_agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
              "checked_sequences": int(len(check_ids)), "bytes": len(blob), "files": files}
  data.write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
  return manifest
