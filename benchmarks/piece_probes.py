"""Linear models on what a network's token table starts from: where is a task's label evidence?

    python benchmarks/piece_probes.py --task amazon --vocab 16384 --splits 0 1 2 3 4

For each split seed of a task (data.load_task's `seed`; 0 is the canonical split) it fits on the training
split and scores on the test split, all with L2 logistic regression (C = 1):
  * `words`: TF-IDF of word 1-2 grams (baselines.py, the reference every sweep reports);
  * `pieces`: TF-IDF of the run's tokenizer's pieces (labelcols.py's model, the one the label columns are
    the weights of);
  * `mean vector r=R`: the mean over a text's pieces of the token vectors' first R columns (wordvecs.py, what
    a token table R wide starts from), for each R of --widths;
  * `readout`: the model a `label_readout` classifier starts as (labelcols.readout: per class a weight on
    the text's mean of the label column, or of its class's column for C > 2 classes, fitted on the
    training split), scored on the test split; `readout, no idf`: the same with the bare weights as
    columns (the label columns before 2026-12-03's idf).
If `pieces` is near `words` and far above `mean vector`, the evidence is in piece identity, which the token
vectors do not carry and a network has to learn row by row from the training split (README, "Label
columns"). Needs scikit-learn (the `baselines` extra).
"""

from __future__ import annotations

import argparse

import numpy as np

from embbert_jax import baselines, data, labelcols, wordvecs
from embbert_jax import tokenizer as tok_lib


def probe(task: data.TaskData, tok, vectors: np.ndarray, widths: list[int], max_len: int = 256) -> dict[str, float]:
  from sklearn.linear_model import LogisticRegression
  train, test = task.splits["train"], task.splits["test"]
  out = {"words": baselines.tfidf_linear(task)["test"]["accuracy"]}
  ids = {name: tok.encode_batch(list(s.text), max_len=max_len) for name, s in (("train", train), ("test", test))}
  x_train, _, idf = labelcols.tfidf(ids["train"], tok.vocab_size)
  x_test = labelcols.tfidf(ids["test"], tok.vocab_size, idf)[0]  # the training split's idf
  pieces = LogisticRegression(max_iter=3000).fit(x_train, train.label)  # labelcols.fit_linear's model (tested)
  out["pieces"] = float(np.mean(pieces.predict(x_test) == np.asarray(test.label)))
  for r in widths:
    def feats(a):
      keep = a >= labelcols.NUM_SPECIAL
      return (vectors[a, :r] * keep[..., None]).sum(1) / np.maximum(keep.sum(1, keepdims=True), 1)
    m = LogisticRegression(max_iter=3000).fit(feats(ids["train"]), train.label)
    out[f"mean vector r={r}"] = float(np.mean(m.predict(feats(ids["test"])) == np.asarray(test.label)))
  if not task.is_regression:
    y_train, y_test = np.asarray(train.label), np.asarray(test.label)
    cols = labelcols.columns(ids["train"], y_train, tok.vocab_size, task.num_labels)
    bare = labelcols.fit_linear(x_train, y_train, task.num_labels)  # the weights without the idf
    present = (cols != 0).any(axis=1)
    bare = np.where(present[:, None], bare, 0.0) / bare[present].std(axis=0, keepdims=True)
    for name, c in (("readout", cols), ("readout, no idf", bare)):
      slopes, icpts = labelcols.readout(ids["train"], y_train, c)
      logits = labelcols.label_feature(ids["test"], c) * slopes + icpts
      out[name] = float(np.mean(logits.argmax(axis=1) == y_test))
  return out


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", required=True, help="a single-text classification task")
  p.add_argument("--vocab", type=int, default=16384, help="the shipped tokenizer (and token vectors) of this size")
  p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="split seeds (0: canonical)")
  p.add_argument("--widths", type=int, nargs="+", default=[16, 64], help="token-vector columns R to probe")
  p.add_argument("--max-len", type=int, default=256, help="ids per text, [CLS] included (a model's L)")
  a = p.parse_args(argv)
  tok = tok_lib.get_tokenizer(a.vocab)
  vectors, seen, _ = wordvecs.load(wordvecs.find(a.vocab))
  vectors = np.where(seen[:, None], vectors / vectors[seen].std(0, keepdims=True), 0.0)  # as token_table scales
  rows = [probe(data.load_task(a.task, seed=k), tok, vectors, a.widths, a.max_len) for k in a.splits]
  print(f"test accuracy, mean over splits {a.splits} of {a.task} (V = {a.vocab}, L = {a.max_len}):")
  for key in rows[0]:
    vals = np.array([r[key] for r in rows]) * 100
    print(f"  {key:18s} {vals.mean():6.2f}   ({', '.join(f'{v:.2f}' for v in vals)})")


if __name__ == "__main__":
  main()
