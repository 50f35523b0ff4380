"""Labels for texts from a trained or exported model: the path users script against.

    python -m embbert_jax.predict RUN [--text-file F]        (default: stdin)

RUN is a training workdir (`train --workdir W`: its finetune/model is used), a saved model directory
(params.npz + config.json), or an export directory (model.npz + manifest.json, e.g. `export --format c`).
A saved model runs the float JAX model; an export runs the plain-NumPy reference of its policy (int8:
EmbBERT-Q), which is what the C runtime equals. Texts are one per line (split on "\\n" only, as the C
runtime's main; invalid UTF-8 is replaced). Each output line: the label name, then the probabilities
(softmax of the logits) of every label in order; for a regression model "value" and the prediction.
Label names come from the export's manifest or the saved model's config.json, else from the training
run's task (a model saved before its config held them), else 0, 1, ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from embbert_jax import artifacts, cli


class PredictError(ValueError):
  """A run or input that cannot be read (one-line message)."""


def resolve(run: str | Path) -> tuple[str, Path]:
  """("export", dir) for an export directory, ("model", dir) for a saved model or a training workdir."""
  p = Path(run)
  if p.is_file():
    p = p.parent
  if (p / artifacts.MODEL_NPZ).is_file() and (p / artifacts.MANIFEST).is_file():
    return "export", p
  for cand in (p, p / "model", p / "finetune" / "model"):
    if (cand / artifacts.PARAMS_FILE).is_file() and (cand / artifacts.CONFIG_FILE).is_file():
      return "model", cand
  raise PredictError(f"{run} is neither a training workdir, a saved model (params.npz + config.json) nor an "
                     f"export directory (model.npz + manifest.json)")


def read_texts(path: str | None) -> list[str]:
  """One text per line, split on "\\n" only (a final newline ends the last text)."""
  try:
    raw = sys.stdin.buffer.read() if path in (None, "-") else Path(path).read_bytes()
  except OSError as e:
    raise PredictError(f"cannot read {path}: {e.strerror}") from None
  text = raw.decode("utf-8", errors="replace")
  lines = text.split("\n")
  return lines[:-1] if lines and lines[-1] == "" else lines


class Predictor:
  """Logits of texts from a saved model (JAX) or an export (NumPy reference), with the label names."""

  def __init__(self, run: str | Path) -> None:
    from embbert_jax import tokenizer as tk
    self.kind, self.path = resolve(run)
    if self.kind == "export":
      self.manifest = json.loads((self.path / artifacts.MANIFEST).read_text())
      from embbert_jax import configs
      self.cfg = configs.model_config(**self.manifest["config"])
      c = self.manifest.get("c", {})
      self.labels, self.add_cls = c.get("labels"), c.get("add_cls", True)
      tok = self.path / artifacts.TOKENIZER_FILE if self.manifest.get("tokenizer") else None
    else:
      try:
        self.params, self.cfg, tok = artifacts.load_model(self.path)
      except artifacts.CheckpointError as e:
        raise PredictError(str(e)) from None
      self.labels, self.add_cls = artifacts.discover_labels(self.path)
    if tok is None or not Path(tok).is_file():
      raise PredictError(f"{self.path} holds no tokenizer ({artifacts.TOKENIZER_FILE})")
    self.tokenizer = tk.Tokenizer(tok)
    n = self.cfg.num_labels
    if not self.labels or len(self.labels) != n:
      self.labels = [str(i) for i in range(n)] if n > 1 else ["value"]

  def ids(self, texts: list[str]) -> np.ndarray:
    return self.tokenizer.encode_batch(texts, max_len=self.cfg.max_len, add_cls=self.add_cls)

  def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
    ids = self.ids(texts)
    if not len(ids):
      return np.zeros((0, self.cfg.num_labels), np.float32)
    if self.kind == "export":
      from embbert_jax import reference
      return reference.predict(self.path, ids)[1]
    import jax
    from embbert_jax import models
    model = models.build_model(self.cfg)
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
    out = []
    for i in range(0, len(ids), batch_size):
      chunk = ids[i:i + batch_size]
      pad = np.zeros((batch_size - len(chunk), ids.shape[1]), ids.dtype)  # one compiled shape
      out.append(np.asarray(apply(self.params, np.concatenate([chunk, pad])))[:len(chunk)])
    return np.concatenate(out)

  def lines(self, texts: list[str]) -> list[str]:
    logits = self.logits(texts).astype(np.float64)
    if self.cfg.num_labels == 1:
      return [f"value {v[0]:.6g}" for v in logits]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return [" ".join([self.labels[int(p.argmax())], *(f"{x:.6f}" for x in p)]) for p in probs]


def main(argv: list[str] | None = None) -> int:
  ap = cli.parser("python -m embbert_jax.predict", __doc__.split("\n\n")[0])
  ap.add_argument("run", help="training workdir, saved model directory, or export directory")
  ap.add_argument("--text-file", default=None, help="one text per line (default: stdin)")
  args = ap.parse_args(argv)
  try:
    predictor = Predictor(args.run)
    texts = read_texts(args.text_file)
  except PredictError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for line in predictor.lines(texts):
    print(line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
