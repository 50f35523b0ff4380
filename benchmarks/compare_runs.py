"""Seed-level comparison of `train --seeds N` runs: mean +- sd of each run's test metrics and, for every
run after the first, its difference from the first with a Welch 95 % interval over seeds.

    python benchmarks/compare_runs.py runs/ft/tweets-scratch runs/ft/tweets-pre2h-spec [--metric accuracy mcc]
    python benchmarks/compare_runs.py --study runs/experiments/baselines_2mb-cpu --arms embbert bert mamba

A run is a `--workdir` of `python -m embbert_jax.train --seeds N` (its seed_*/finetune/result.json files).
`--study` compares arms of a study's output (`python -m embbert_jax.experiment NAME --cpu`) on each task and
averaged over the tasks (pooled_welch: the per-task differences' mean, its variance from every seed).
The interval is over seeds only (test-set sampling noise is not in it): "excludes 0" means the two arms
differ beyond what the seeds vary, not that the claim holds on another test set. Needs scipy (installed
with scikit-learn, the `baselines` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def run_folder(workdir: Path) -> Path:
  """The folder that holds a run's seeds: a study arm copied with --reuse points to the run it reused."""
  workdir = Path(workdir)
  arm = workdir / "arm_result.json"
  if not any(workdir.glob("seed_*/finetune/result.json")) and arm.is_file():
    return Path(json.loads(arm.read_text()).get("reused_from") or workdir)
  return workdir


def seed_results(workdir: Path) -> list[dict]:
  workdir = run_folder(workdir)
  files = sorted(Path(workdir).glob("seed_*/finetune/result.json")) or sorted(Path(workdir).glob("result.json"))
  if not files:
    raise SystemExit(f"error: {workdir} holds no seed_*/finetune/result.json (a `train --seeds N` workdir)")
  return [json.loads(f.read_text()) for f in files]


def configs_of(workdir: Path) -> list[dict]:
  workdir = run_folder(workdir)
  files = sorted(workdir.glob("seed_*/finetune/config.json")) or sorted(workdir.glob("config.json"))
  return [json.loads(f.read_text()) for f in files] or [{}]


def task_of(workdir: Path) -> str:
  return configs_of(workdir)[0].get("task", "?")


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
  """(mean(b) - mean(a), low, high): Welch's t interval for the difference of means."""
  return pooled_welch([(a, b)], level)


def pooled_welch(pairs: list[tuple[np.ndarray, np.ndarray]], level: float = 0.95) -> tuple[float, float, float]:
  """The difference of means averaged over tasks, (1/T) sum_t (mean(b_t) - mean(a_t)), and its t interval:
  variance (1/T^2) sum_t (var(a_t)/n + var(b_t)/n) over the seeds, degrees of freedom by Welch-Satterthwaite
  over all 2T samples (T = 1: Welch's interval)."""
  from scipy import stats
  t_n = len(pairs)
  parts = [(x.var(ddof=1) / len(x) / t_n ** 2, len(x)) for a, b in pairs for x in (a, b)]
  diff = float(np.mean([b.mean() - a.mean() for a, b in pairs]))
  var = sum(v for v, _ in parts)
  if var == 0:
    return diff, diff, diff
  df = var ** 2 / sum(v ** 2 / (n - 1) for v, n in parts)
  half = float(stats.t.ppf(0.5 + level / 2, df)) * float(np.sqrt(var))
  return diff, diff - half, diff + half


def study_table(study: Path, arms: list[str], metric: str) -> str:
  """A study's arms (`python -m embbert_jax.experiment --cpu` output) against the first, per task and
  averaged over the tasks where every arm has results: the rows of the README's claims table."""
  done = lambda d, arm: any(run_folder(d / arm).glob("seed_*/finetune/result.json"))  # finished or training
  tasks = sorted(d.name for d in (study / "runs").iterdir() if all(done(d, a) for a in arms))
  if not tasks:
    raise SystemExit(f"error: no task in {study / 'runs'} has every arm of {', '.join(arms)}")
  res = {(t, arm): np.array([r["test"][metric] for r in seed_results(study / "runs" / t / arm)])
         for t in tasks for arm in arms}
  test = lambda t, arm: res[(t, arm)]
  lines = [f"| arm | {' | '.join(tasks)} | vs {arms[0]}: mean over tasks [95 %] |", "|---|" + "---|" * (len(tasks) + 1)]
  for arm in arms:
    cells = []
    for t in tasks:
      v = test(t, arm)
      cell = f"{100 * v.mean():.1f} +- {100 * v.std():.1f}"  # sd as the other tables give it (ddof 0)
      if arm != arms[0]:
        d, lo, hi = welch(test(t, arms[0]), v)
        cell += f" ({100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}])"
      cells.append(cell)
    pooled = ""
    if arm != arms[0]:
      d, lo, hi = pooled_welch([(test(t, arms[0]), test(t, arm)) for t in tasks])
      pooled = f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    lines.append(f"| {arm} | {' | '.join(cells)} | {pooled} |")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("runs", nargs="*", help="train --seeds workdirs; the first is the reference")
  ap.add_argument("--metric", nargs="+", default=["accuracy", "mcc"])
  ap.add_argument("--study", type=Path, help="a study's output folder: compare its --arms on every task")
  ap.add_argument("--arms", nargs="+", default=[], help="with --study: arm names, the first the reference")
  args = ap.parse_args()
  if args.study:
    if len(args.arms) < 2:
      raise SystemExit("error: --study needs --arms REFERENCE ARM [ARM ...]")
    for m in args.metric:
      print(f"test {m} in %, mean +- sd over seeds (difference from {args.arms[0]} [95 % Welch])\n")
      print(study_table(args.study, args.arms, m) + "\n")
    return
  if len(args.runs) < 1:
    raise SystemExit("error: give train --seeds workdirs, or --study DIR --arms ...")
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
