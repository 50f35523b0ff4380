"""The held-out evaluation of a fine-tuning run: validation and test metrics per group member, computed
by the run's forward program (`programs.Programs.apply`) over the task's encoded splits.

A model whose outputs ignore right padding (configs.padding_invariant) is evaluated in length order at the
run's bucket widths (batches.eval_batches), so it computes a fraction of the padded work and reuses the
widths the run compiled; `precompile` compiles the same widths ahead through `eval_widths`.
"""

from __future__ import annotations

import jax
import numpy as np

from embbert_jax import batches as batch_lib
from embbert_jax import configs, data, metrics


def eval_widths(cfg, ladder: tuple[int, ...] | None) -> tuple[int, ...] | None:
  """The widths a fine-tuning run evaluates at (batches.eval_batches): its bucket ladder where the model
  is padding-invariant, else None (every batch at the arrays' length, as the published models read it)."""
  return tuple(ladder) if ladder and configs.padding_invariant(cfg.model) else None


SPLITS = data.EVAL_SPLITS


def metric_names(is_regression: bool) -> list[str]:
  """The "<split>/<metric>" keys an evaluation returns per member."""
  return [f"{s}/{n}" for s in SPLITS for n in metrics.metric_keys(is_regression)]


def batch_widths(cfg, enc, ladder: tuple[int, ...] | None) -> list[int]:
  """Every batch width an evaluation of the run calls its forward program at (what precompile compiles)."""
  return sorted({b["ids"].shape[1] for s in SPLITS
                 for b in batch_lib.eval_batches(enc[s], cfg.batch_size, eval_widths(cfg, ladder))})


def classify_eval(progs, cfg, enc, is_regression, ladder: tuple[int, ...] | None = None):
  """Validation and test metrics per member. A padding-invariant model is evaluated in length order at
  the run's bucket widths (batches.eval_batches), and every batch is dispatched before any is read back,
  so the host waits once per split instead of once per batch."""
  batches = {split: list(batch_lib.eval_batches(enc[split], cfg.batch_size, eval_widths(cfg, ladder)))
             for split in SPLITS}

  def evaluate(params_G):
    if params_G is None:
      return metric_names(is_regression)
    g = jax.tree.leaves(params_G)[0].shape[0]
    out = [{} for _ in range(g)]
    for split, split_batches in batches.items():
      pending = [(progs.apply(params_G, b["ids"]), b["index"]) for b in split_batches]
      logits_G = None
      for logits, index in pending:
        logits, real = np.asarray(logits), index >= 0
        if logits_G is None:
          logits_G = np.zeros((g, len(enc[split])) + logits.shape[2:], logits.dtype)
        logits_G[:, index[real]] = logits[:, real]
      for i in range(g):
        out[i][split] = metrics.task_metrics(enc[split].labels, logits_G[i], is_regression)
    return out
  return evaluate
