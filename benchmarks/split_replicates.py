"""One config against TF-IDF + logistic regression on several splits of a task: is a gap real or the test set's luck?

    python benchmarks/split_replicates.py --task amazon --splits 0 1 2 3 4 --out runs/splits-amazon -- \\
        --preset embbert --seeds 3 --set model.vocab_size=16384 --set model.max_len=64 ...
    python benchmarks/split_replicates.py ... --out runs/splits-amazon-x --against runs/splits-amazon -- ... --set x=1

`--against` an earlier run on the same splits adds the paired difference (this run's seed mean minus that
run's, split by split, with its t interval over splits): the comparison of a change, with the splits'
own spread taken out.

A task's test split is small (amazon: 371 snippets, so one point of accuracy is under 4 of them), and a
sweep picks its configs on a validation split of the same size, so one split cannot tell a config that
is a point under the linear model from one that is level with it. For each split seed k (data.load_task's
`seed`: 0 is the canonical split, others are new seeded stratified splits of the same pool) this writes the
task as a local .jsonl with a "split" column (<out>/split<k>.jsonl), trains it with `python -m embbert_jax.train
--task <that file> --workdir <out>/split<k> <train args>` (a run already there resumes, or is read back when
finished), and reads the seeds' test accuracy and the TF-IDF + LR and majority references that `train`
fits on the same split. It prints one row per split and the mean gap over splits with its t interval
(the splits are the replicates: the interval holds test-set and seed noise together, split-to-split).
A finished sweep's frontier points are checked the same way by `python -m embbert_jax.replicate <sweep
folder>` (the package's command, whose split files and interval this script uses); this script takes any
config as `train` arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from compare_runs import seed_results  # benchmarks/ is on sys.path when this runs as a script

from embbert_jax import baselines, data, files, replicate


def run_split(task: str, seed: int, out: Path, train_args: list[str]) -> dict:
  """Trains (or resumes) split `seed`; returns its row: seeds' test accuracies and the references."""
  path = out / f"split{seed}.jsonl"
  if not path.is_file():
    replicate.write_split(task, seed, path)
  workdir = out / f"split{seed}"
  cmd = [sys.executable, "-m", "embbert_jax.train", "--task", str(path), "--workdir", str(workdir), *train_args]
  print("$", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)
  runs = seed_results(workdir)
  refs = runs[0].get("baselines", {}).get("baselines", {})
  tfidf = refs.get(baselines.TFIDF, {}).get("test", {}).get("accuracy", math.nan)
  major = refs.get(baselines.MAJORITY, {}).get("test", {}).get("accuracy", math.nan)
  return dict(split=seed, acc=[r["test"]["accuracy"] for r in runs], tfidf=tfidf, majority=major,
              n_test=len(data.load_task(str(path)).test))


def summarize(rows: list[dict], level: float = 0.95) -> dict:
  """Mean over splits of (the seeds' mean accuracy - TF-IDF's), its t interval over splits, wins."""
  return replicate.gap_summary([np.mean(r["acc"]) - r["tfidf"] for r in rows], level)


def paired(rows: list[dict], base_rows: list[dict], level: float = 0.95) -> dict | None:
  """This run minus `base_rows` (an earlier run's splits.json rows, e.g. the same config before a change),
  split by split: the mean of the differences of the seeds' mean accuracies over the splits both have,
  its t interval over those splits, and on how many this run is ahead. None when they share < 2 splits."""
  base = {r["split"]: np.mean(r["acc"]) for r in base_rows}
  diffs = [np.mean(r["acc"]) - base[r["split"]] for r in rows if r["split"] in base]
  return replicate.gap_summary(diffs, level) if len(diffs) >= 2 else None


def table(rows: list[dict], s: dict) -> str:
  lines = ["| split | test n | seeds' test accuracy | mean +- sd | TF-IDF + LR | gap | majority |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    a = np.array(r["acc"])
    lines.append(f"| {r['split']} | {r['n_test']} | {', '.join(f'{x * 100:.1f}' for x in a)} | "
                 f"{a.mean() * 100:.2f} +- {a.std() * 100:.2f} | {r['tfidf'] * 100:.2f} | "
                 f"{(a.mean() - r['tfidf']) * 100:+.2f} | {r['majority'] * 100:.1f} |")
  lines.append(f"\nmean gap over {s['splits']} splits: {s['mean'] * 100:+.2f} points, 95 % t interval "
               f"[{s['low'] * 100:+.2f}, {s['high'] * 100:+.2f}]; above TF-IDF + LR on {s['wins']} of {s['splits']}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  train_args = argv[argv.index("--") + 1:] if "--" in argv else []
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", required=True, help="a registered single-text classification task")
  p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="split seeds (0: canonical)")
  p.add_argument("--out", required=True, help="folder for the split files and the runs")
  p.add_argument("--against", default=None,
                 help="an earlier --out folder (the same splits): also print the paired difference to it")
  a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
  out = Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  rows = [run_split(a.task, k, out, train_args) for k in a.splits]
  s = summarize(rows)
  text = table(rows, s)
  if a.against:
    base = json.loads((Path(a.against) / "splits.json").read_text())
    d = paired(rows, base["rows"])
    text += ("\nagainst " + a.against + (": fewer than 2 splits in common" if d is None else
             f": paired difference {d['mean'] * 100:+.2f} points, 95 % t interval [{d['low'] * 100:+.2f}, "
             f"{d['high'] * 100:+.2f}] over {d['splits']} splits, ahead on {d['wins']}"))
  files.write_text_atomic(out / "splits.md", text + "\n")
  files.write_json_atomic(out / "splits.json", dict(task=a.task, train_args=train_args, rows=rows, summary=s))
  print(text)


if __name__ == "__main__":
  main()
