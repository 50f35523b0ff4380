"""Pareto-aware early stopping of sweep trials: pure functions of validation curves, no ledger, no I/O.

Each trial validates `evals` times; from `after` x steps on, a trial is stopped (PRUNED) when at least
`min_better` other trials that need no more memory scored at least `margin` higher at the same step. A
trial that smaller models already beat cannot reach the frontier, while the smallest models, which the
frontier needs however weak, are never stopped by larger ones. Optuna's pruners cannot do this: they rank a
single objective, and multi-objective studies have no trial.report. The last validation (step == --steps)
never stops a trial (worker.py: one that ran all its steps is complete).

With a train grid the comparison is between settings (a config with its tuning knobs, pareto.setting_key):
the repeats (seeds) of a setting count as one peer, by their mean curve, and a setting is judged by its
mean over its repeats that reached the step (`standing`), so seeds never stop each other.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from embbert_jax import pareto

Curve = dict[int, float]  # step -> validation metric


def hopeless(peers: list[tuple[int, Curve]], mine: int, step: int, value: float, es) -> bool:
  """Pareto early stopping: `min_better` peers of at most `mine` bytes beat `value` by `margin` at `step`."""
  better = sum(1 for size, curve in peers if size <= mine and curve.get(step, -math.inf) >= value + es.margin)
  return better >= es.min_better


def standing(others: Iterable[tuple[dict[str, Any], Curve]], my_attrs: dict[str, Any], my_value: float,
             step: int, policy: str) -> tuple[list[tuple[int, Curve]], float]:
  """(peers, my value) for hopeless(): every other setting (pareto.setting_key) among `others` (trials as
  (ledger attrs, curve)) as one peer of its memory under `policy` whose curve is the mean of its trials'
  curves, and my setting's mean at `step` (`my_value` and my repeats that reached it)."""
  settings: dict[str, tuple[int, list[Curve]]] = {}
  for attrs, curve in others:
    size = attrs["bytes"][policy]["total"]
    settings.setdefault(pareto.setting_key(attrs), (size, []))[1].append(curve)
  mine = [my_value] + [c[step] for c in settings.pop(pareto.setting_key(my_attrs), (0, []))[1] if step in c]
  peers = [(size, {k: sum(c[k] for c in curves if k in c) / sum(1 for c in curves if k in c)
                   for k in set().union(*curves)}) for size, curves in settings.values()]
  return peers, sum(mine) / len(mine)
