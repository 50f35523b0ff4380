"""Seed-level comparison of `train --seeds N` runs: mean +- sd of each run's test metrics and, for every
run after the first, its difference from the first with a Welch 95 % interval over seeds.

    python benchmarks/compare_runs.py runs/ft/tweets-scratch runs/ft/tweets-pre2h-spec [--metric accuracy mcc]

A run is a `--workdir` of `python -m embbert_jax.train --seeds N` (its seed_*/finetune/result.json files).
The interval is over seeds only (test-set sampling noise is not in it): "excludes 0" means the two arms
differ beyond what the seeds vary, not that the claim holds on another test set. Needs scipy (installed
with scikit-learn, the `baselines` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def seed_results(workdir: Path) -> list[dict]:
  files = sorted(Path(workdir).glob("seed_*/finetune/result.json")) or sorted(Path(workdir).glob("result.json"))
  if not files:
    raise SystemExit(f"error: {workdir} holds no seed_*/finetune/result.json (a `train --seeds N` workdir)")
  return [json.loads(f.read_text()) for f in files]


def configs_of(workdir: Path) -> list[dict]:
  files = sorted(workdir.glob("seed_*/finetune/config.json")) or sorted(workdir.glob("config.json"))
  return [json.loads(f.read_text()) for f in files] or [{}]


def task_of(workdir: Path) -> str:
  return configs_of(workdir)[0].get("task", "?")


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
  """(mean(b) - mean(a), low, high): Welch's t interval for the difference of means."""
  from scipy import stats
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  diff = float(b.mean() - a.mean())
  se = float(np.sqrt(va + vb))
  if se == 0:
    return diff, diff, diff
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  t = float(stats.t.ppf(0.5 + level / 2, df))
  return diff, diff - t * se, diff + t * se


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("runs", nargs="+", help="train --seeds workdirs; the first is the reference")
  ap.add_argument("--metric", nargs="+", default=["accuracy", "mcc"])
  args = ap.parse_args()
  from embbert_jax import inits
  runs = {r: seed_results(Path(r)) for r in args.runs}
  tasks = {r: task_of(Path(r)) for r in args.runs}
  if len(set(tasks.values())) > 1:
    raise SystemExit("error: the runs are on different tasks: " + ", ".join(f"{r}: {t}" for r, t in tasks.items()))
  ref = args.runs[0]
  print(f"task {tasks[ref]}\n")
  for m in args.metric:
    print(f"| run | init | recipe | seeds | test {m} (mean +- sd) | each seed | vs {Path(ref).name}: difference [95 % Welch] |")
    print("|---|---|---|---|---|---|---|")
    a = np.array([r["test"][m] for r in runs[ref]])
    for name, rs in runs.items():
      v = np.array([r["test"][m] for r in rs])
      init = rs[0].get("init") or inits.carried(configs_of(Path(name))[0]).record()  # runs from before it
      init = f"{init.get('kind', '?')}" + (f" ({init['steps']} steps)" if init.get("steps") else "")
      cmp = ""
      if name != ref and len(v) > 1 and len(a) > 1:
        d, lo, hi = welch(a, v)
        cmp = f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
      print(f"| {Path(name).name} | {init} | {rs[0].get('recipe', '?')} | {len(v)} | {v.mean():.4f} +- {v.std():.4f} | "
            f"{' '.join(f'{x:.4f}' for x in v)} | {cmp} |")
    print()


if __name__ == "__main__":
  main()
