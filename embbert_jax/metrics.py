"""Evaluation metrics on host arrays: accuracy, MCC, macro-F1 (classification), Spearman (regression).

Computed from one confusion matrix in NumPy rather than pulling in scikit-learn for three formulas; the
multi-class MCC is Gorodkin's R_K, which equals the binary MCC for two classes (a test checks both).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
  """C[i, j] = number of examples of true class i predicted as j."""
  idx = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
  return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mcc_from_confusion(c: np.ndarray) -> float:
  c = c.astype(np.float64)
  n = c.sum()
  correct = np.trace(c)
  pred, true = c.sum(axis=0), c.sum(axis=1)
  cov_xy = correct * n - pred @ true
  cov_xx = n * n - pred @ pred
  cov_yy = n * n - true @ true
  denom = np.sqrt(cov_xx * cov_yy)
  return float(cov_xy / denom) if denom > 0 else 0.0


def macro_f1_from_confusion(c: np.ndarray) -> float:
  c = c.astype(np.float64)
  tp = np.diag(c)
  denom = c.sum(axis=0) + c.sum(axis=1)
  f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)
  present = (c.sum(axis=1) + c.sum(axis=0)) > 0  # classes absent from labels and predictions don't count
  return float(f1[present].mean()) if present.any() else 0.0


def cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
  """Mean cross-entropy (nats) of integer labels under the logits' softmax."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return float(-np.mean(np.take_along_axis(logp, np.asarray(labels, np.int64)[:, None], -1)))


def classification_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
  """Accuracy, MCC, macro-F1 and the loss (the sweep's lower rungs rank on it: from scratch the
  accuracy sits at chance for a while, the loss already moves)."""
  preds = np.asarray(logits).argmax(-1)
  c = confusion(np.asarray(labels), preds, np.asarray(logits).shape[-1])
  return {"accuracy": float(np.trace(c) / max(c.sum(), 1)), "mcc": mcc_from_confusion(c),
          "macro_f1": macro_f1_from_confusion(c), "loss": cross_entropy(labels, logits)}


def regression_metrics(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
  preds = np.asarray(preds).reshape(-1)
  rho = stats.spearmanr(labels, preds).statistic if np.std(preds) > 0 else 0.0
  return {"spearman": float(rho), "pearson": float(np.corrcoef(labels, preds)[0, 1]) if np.std(preds) > 0 else 0.0,
          "mse": float(np.mean((labels - preds) ** 2))}


def metric_keys(is_regression: bool) -> list[str]:
  """The keys `task_metrics` returns, read off the metric functions themselves (on two dummy examples),
  so a metric added there reaches every caller that sizes or names its outputs ahead (precompile)."""
  return list(task_metrics(np.zeros(2), np.zeros((2, 1 if is_regression else 2)), is_regression))


def task_metrics(labels: np.ndarray, outputs: np.ndarray, is_regression: bool) -> dict[str, float]:
  return regression_metrics(labels, outputs) if is_regression else classification_metrics(labels, outputs)
