"""What plateau stopping would have kept: replays `--patience P` on finished runs' validation curves.

    python benchmarks/patience_replay.py runs/s30/t5-rt runs/s30/tls10-amazon --patience 2 3 4 6

Each run folder is searched for metrics.jsonl files (a `train --seeds N` workdir holds one per seed); their
validation rows are the curve. For each patience P, the trainer's rule (`loop.fit`: stop once the best
validation metric is P evaluations old; a tie does not improve it) gives the evaluation it stops at and the
checkpoint it keeps. Printed per P: how many runs keep the same checkpoint as the full run, the largest
validation metric given up, the mean test accuracy at the kept checkpoint (when the rows carry it) against
the full run's, and the share of evaluations (so of steps) saved. The curves must have been validated at
the interval the replay is about: a run validated once an epoch replays patience counted in epochs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embbert_jax.files import read_jsonl  # noqa: E402


def curve(path: Path, metric: str) -> list[tuple[float, float | None]]:
  """(validation metric, test accuracy or None) of each validation row of one metrics.jsonl."""
  rows = [r for r in read_jsonl(path) if f"validation/{metric}" in r]
  return [(float(r[f"validation/{metric}"]), r.get("test/accuracy")) for r in rows]


def replay(values: list[float], patience: int) -> tuple[int, int]:
  """(index kept, number of evaluations run) under the trainer's plateau rule; patience 0: never stops."""
  best = 0
  for i in range(1, len(values)):
    if values[i] > values[best]:
      best = i
    elif patience and i - best >= patience:
      return best, i + 1
  return best, len(values)


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("runs", nargs="+", type=Path, help="run folders holding metrics.jsonl files")
  ap.add_argument("--patience", type=int, nargs="+", default=[2, 3, 4, 6])
  ap.add_argument("--metric", default="mcc")
  args = ap.parse_args(argv)
  curves = []
  for run in args.runs:
    files = sorted(p for p in run.rglob("metrics.jsonl") if "group_" not in str(p))
    if not files:
      sys.exit(f"{run}: no metrics.jsonl under it")
    curves += [c for f in files if len(c := curve(f, args.metric)) >= 2]
  print(f"{len(curves)} curves with 2+ validations, from {len(args.runs)} run folder(s)")
  print("| patience | same checkpoint | most validation metric given up | test acc kept | test acc full run "
        "| evaluations saved |")
  print("|---|---|---|---|---|---|")
  for p in args.patience:
    same, gave_up, kept_acc, full_acc, ran, total = 0, 0.0, [], [], 0, 0
    for c in curves:
      values = [v for v, _ in c]
      full, _ = replay(values, 0)
      kept, n = replay(values, p)
      same += kept == full
      gave_up = max(gave_up, values[full] - values[kept])
      if c[kept][1] is not None and c[full][1] is not None:
        kept_acc.append(c[kept][1])
        full_acc.append(c[full][1])
      ran, total = ran + n, total + len(values)
    acc = (f"{100 * np.mean(kept_acc):.2f} %", f"{100 * np.mean(full_acc):.2f} %") if kept_acc else ("-", "-")
    print(f"| {p} | {same} of {len(curves)} | {gave_up:.4f} {args.metric} | {acc[0]} | {acc[1]} | "
          f"{100 * (1 - ran / total):.0f} % |")


if __name__ == "__main__":
  main()
