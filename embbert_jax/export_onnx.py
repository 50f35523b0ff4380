"""`--format onnx`: the float classifier as an ONNX graph (jax2onnx), checked with onnxruntime.

    python -m embbert_jax.export RUN --format onnx --out DIR

writes `model.onnx` (input `input_ids` int32 [1, L], right-padded with 0 as `Tokenizer.encode_batch`;
output `logits` float32 [1, C]), `tokenizer.json` (Hugging Face `tokenizers`, see export_tokenizer.hf_tokenizer)
and `manifest.json`. The graph is the fp32 model (the float JAX function, conv lowered as shifted
multiply-adds); int8 in ONNX (DynamicQuantizeLinear + MatMulInteger per row, as the reference) is not
exported. Before writing, onnxruntime runs the graph on random ids and must agree with JAX (max |diff|
recorded in the manifest). Needs the `export` extra (jax2onnx, onnx, onnxruntime).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from embbert_jax import configs, memory
from embbert_jax import files as files_lib

ONNX_FORMAT = "embbert_jax.onnx/1"
ONNX_FILE = "model.onnx"
OPSET = 23  # jax2onnx 0.17.1 default (ReduceMean with an axes input needs >= 18); onnxruntime >= 1.20 runs it


def onnx_model(params: Any, cfg, opset: int = OPSET):
  """The ONNX ModelProto of the classifier at batch 1, length L."""
  import jax
  import jax.numpy as jnp
  from jax2onnx import to_onnx
  from embbert_jax import models
  c = cfg.copy_and_resolve_references()
  c.conv_impl = "shift"  # slices and adds: plain ONNX ops
  model = models.build_model(c)
  fn = lambda ids: model.apply({"params": params}, ids)
  return to_onnx(fn, [jax.ShapeDtypeStruct((1, c.max_len), jnp.int32)], model_name="embbert", opset=opset,
                 input_names=["input_ids"], output_names=["logits"])


def check_with_onnxruntime(proto, params: Any, cfg, n: int = 8, seed: int = 0) -> float:
  """Max |onnxruntime - JAX| over n random right-padded sequences."""
  import jax.numpy as jnp
  import onnxruntime as ort
  from embbert_jax import models
  sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
  rng = np.random.RandomState(seed)
  model = models.build_model(cfg)
  worst = 0.0
  for i in range(n):
    ids = np.zeros((1, cfg.max_len), np.int32)
    length = rng.randint(1, cfg.max_len + 1)
    ids[0, :length] = rng.randint(5, cfg.vocab_size, length)
    ids[0, 0] = configs.CLS_ID
    got = sess.run(["logits"], {"input_ids": ids})[0]
    want = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    worst = max(worst, float(np.abs(got - want).max()))
  return worst


def export_onnx(params: Any, cfg, out_dir: str | Path, *, tokenizer_path: str | Path | None = None,
                label_names: list[str] | None = None, add_cls: bool = True) -> dict[str, Any]:
  from embbert_jax import data, export_tokenizer
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  proto = onnx_model(params, cfg)
  import onnx
  onnx.checker.check_model(proto)
  diff = check_with_onnxruntime(proto, params, cfg)
  if diff > 1e-4:
    raise AssertionError(f"onnxruntime differs from JAX by {diff:.3g}")
  labels = list(label_names) if label_names else [str(i) for i in range(cfg.num_labels)]
  for k, v in {"labels": json.dumps(labels), "config": json.dumps(cfg.to_dict())}.items():
    entry = proto.metadata_props.add()
    entry.key, entry.value = k, v
  files_lib.write_bytes_atomic(out / ONNX_FILE, proto.SerializeToString())
  files = [ONNX_FILE]
  if tokenizer_path is not None:
    data.write_text_atomic(out / "tokenizer.json",
                           export_tokenizer.hf_tokenizer(tokenizer_path, cfg.max_len, add_cls).to_str(pretty=False))
    files.append("tokenizer.json")
  ops = sorted({n.op_type for n in proto.graph.node})
  manifest = {"format": ONNX_FORMAT, "config": cfg.to_dict(), "labels": labels, "add_cls": add_cls,
              "opset": OPSET, "inputs": {"input_ids": ["int32", [1, cfg.max_len]]},
              "outputs": {"logits": ["float32", [1, cfg.num_labels]]}, "ops": ops,
              "onnxruntime_vs_jax_max_abs": diff, "bytes": (out / ONNX_FILE).stat().st_size,
              "fp32_weight_bytes": memory.estimate(cfg, "fp32").weight_bytes, "files": files}
  data.write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
  return manifest
