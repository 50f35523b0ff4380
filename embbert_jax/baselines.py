"""Reference baselines on a task's own split: the majority class and TF-IDF (1-2 grams) + logistic regression.

Both are fitted on the task's training split and scored on its validation and test splits with the
metrics the trainer reports (metrics.task_metrics), so a user sees at a glance whether a trained encoder
beat a linear model on the same data. `train` prints them next to its result and writes them into
result.json; the sweep's frontier.md lists them as rows and its plot draws them as horizontal lines.

scikit-learn is an optional extra (`pip install embbert_jax[baselines]`): without it the linear baseline
is skipped with one line (`note`), the majority class still comes out. Results are cached per (task,
split contents, scikit-learn version) in memory and under <data cache>/baselines, so a sweep that
redraws its frontier after every trial fits them once.

For regression tasks the two references are the training mean and TF-IDF + ridge regression.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from embbert_jax import data, files, metrics

VERSION = 1  # bump when a baseline's definition changes: old cache entries are then ignored
MAJORITY, TFIDF = "majority class", "TF-IDF (1-2 grams) + logistic regression"
TFIDF_REGRESSION = "TF-IDF (1-2 grams) + ridge regression"
EVAL_SPLITS = data.EVAL_SPLITS


def sklearn_version() -> str | None:
  try:
    import sklearn
  except ImportError:
    return None
  return sklearn.__version__


def _texts(split: data.Split) -> list[str]:
  """Pair tasks: both texts joined by a marker the vectoriser keeps as a token."""
  if split.text_pair is None:
    return list(split.text)
  return [f"{a} xxsep {b}" for a, b in zip(split.text, split.text_pair)]


def _outputs(pred: np.ndarray, num_labels: int, is_regression: bool) -> np.ndarray:
  """Predictions in the form metrics.task_metrics takes: one-hot scores, or the values themselves."""
  if is_regression:
    return np.asarray(pred, np.float64)
  return np.eye(num_labels)[np.asarray(pred, np.int64)]


def majority(task: data.TaskData) -> dict[str, dict[str, float]]:
  """The most frequent training label (the lowest on a tie) for every example; the training mean for
  regression."""
  train = task.train
  if task.is_regression:
    const = float(np.mean(train.label))
  else:
    const = int(np.argmax(np.bincount(train.label.astype(np.int64), minlength=task.num_labels)))
  return {s: _scores(task.splits[s].label, _outputs(np.full(len(task.splits[s]), const), task.num_labels,
                                                    task.is_regression), task.is_regression)
          for s in EVAL_SPLITS}


def _scores(labels, outputs, is_regression: bool) -> dict[str, float]:
  """The trainer's metrics of hard predictions (a loss of one-hot scores would mean nothing: left out)."""
  out = metrics.task_metrics(labels, outputs, is_regression)
  out.pop("loss", None)
  return out


def tfidf_linear(task: data.TaskData) -> dict[str, dict[str, float]]:
  """TF-IDF of word 1-2 grams (scikit-learn defaults otherwise) + logistic regression (or ridge)."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression, Ridge
  from sklearn.pipeline import make_pipeline
  head = Ridge() if task.is_regression else LogisticRegression(max_iter=2000)
  model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), head)
  model.fit(_texts(task.train), task.train.label)
  return {s: _scores(task.splits[s].label, _outputs(model.predict(_texts(task.splits[s])), task.num_labels,
                                                    task.is_regression), task.is_regression)
          for s in EVAL_SPLITS}


def split_digest(task: data.TaskData) -> str:
  """A fingerprint of the train/validation/test contents: the cache key, so an edited file never
  reuses stale numbers."""
  h = hashlib.sha256()
  for s in ("train", *EVAL_SPLITS):
    sp = task.splits[s]
    h.update(json.dumps([s, sp.text, sp.text_pair, sp.label.tolist()]).encode())
  return h.hexdigest()[:16]


def compute(task: data.TaskData, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
  """{"task", "baselines": {name: {split: {metric: value}}}, "note"}: the majority class always, the linear
  model where scikit-learn is installed (else `note` says so). Cached on disk (see the module doc)."""
  version = sklearn_version()
  key = f"{split_digest(task)}-v{VERSION}-sklearn{version or 'none'}"
  path = data.resolve_cache_dir(cache_dir) / "baselines" / f"{_slug(task.name)}-{key}.json"
  if path.is_file():
    try:
      return json.loads(path.read_text())
    except json.JSONDecodeError:
      pass  # a damaged entry is recomputed and replaced
  out: dict[str, Any] = {"task": task.name, "baselines": {MAJORITY: majority(task)}, "note": ""}
  if version is None:
    out["note"] = ("TF-IDF + logistic regression baseline skipped: scikit-learn is not installed "
                   "(pip install 'embbert_jax[baselines]')")
  else:
    name = TFIDF_REGRESSION if task.is_regression else TFIDF
    out["baselines"][name] = tfidf_linear(task)
  files.write_json_atomic(path, out, indent=1)
  return out


def for_task(task: str, cache_dir: str | None = None) -> dict[str, Any]:
  """compute() for a task name or file as train/sweep load it (data.load_task); memoised per process
  (a local file by its modification time too, so an edited file is read again)."""
  path = Path(task)
  return _for_task(task, cache_dir, path.stat().st_mtime_ns if path.is_file() else 0)


@functools.lru_cache(maxsize=16)
def _for_task(task: str, cache_dir: str | None, _mtime: int) -> dict[str, Any]:
  return compute(data.load_task(task, cache_dir=cache_dir), cache_dir)


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(str(name)).stem)[:60] or "task"


def format_lines(result: dict[str, Any], split: str = "test") -> list[str]:
  """One line per baseline ("<name>: accuracy 0.7760, mcc 0.5520, ..." on `split`), then the note."""
  lines = [f"reference on the same split ({split}), {name}: "
           + ", ".join(f"{k} {v:.4f}" for k, v in per_split[split].items())
           for name, per_split in result["baselines"].items()]
  return lines + ([result["note"]] if result.get("note") else [])
