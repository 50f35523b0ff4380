"""Does averaging a point's seeds pay under a memory budget? Seed ensembles of a replicate folder's runs.

    python benchmarks/seed_ensemble.py runs/w/rep-amazon [runs/w/rep-nyt ...] [--out F.md]

A `python -m embbert_jax.replicate` folder already holds, for every frontier point and split, the saved
models of its seeds (trial<t>/split<s>/seed_<k>/finetune/model). This loads each split's test texts
(split<s>.jsonl, read by data.load_task), runs every seed's model on them (predict.Predictor, the float
JAX model), averages the seeds' softmax probabilities and scores the argmax. Per point it prints the seeds' mean test accuracy and
the ensemble's, the ensemble's gain over the seed mean with its 95 % t interval over splits
(replicate.gap_summary), and both memories: one model's (the frontier's fp32 figure) and the ensemble's,
k x the weights + one model's activations + a running sum of the label probabilities (the members run in
turn in one activation arena, memory.estimate prices each part). Whether an ensemble is worth shipping is
then a frontier question: it must beat the single points of the same or less memory, not its own members.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from embbert_jax import data, files, memory, predict, replicate


def softmax(logits: np.ndarray) -> np.ndarray:
  z = logits.astype(np.float64) - logits.max(1, keepdims=True)
  p = np.exp(z)
  return p / p.sum(1, keepdims=True)


def split_scores(models: list[Path], texts: list[str], y: np.ndarray) -> tuple[list[float], float, object]:
  """Each member's accuracy on (texts, class ids y), the accuracy of their averaged probabilities, and the
  members' config."""
  probs, p = [], None
  for m in models:
    p = predict.Predictor(m)
    probs.append(softmax(p.logits(texts)))
  accs = [float((pr.argmax(1) == y).mean()) for pr in probs]
  return accs, float((np.mean(probs, 0).argmax(1) == y).mean()), p.cfg


def ensemble_bytes(cfg, k: int) -> tuple[int, int]:
  """(one model's fp32 bytes, k members': k x weights + one set of activations + the probability sum)."""
  rep = memory.estimate(cfg, "fp32")
  return rep.total_bytes, k * rep.weight_bytes + rep.activation_bytes + 4 * cfg.num_labels


def point_rows(folder: Path, point: dict) -> dict:
  seed_means, ens, mem = [], [], None
  for row in point["rows"]:
    s = row["split"]
    seeds = sorted((folder / f"trial{point['trial']}" / f"split{s}").glob("seed_*/finetune/model"))
    if not seeds:
      raise SystemExit(f"error: {folder}/trial{point['trial']}/split{s} holds no seed_*/finetune/model "
                       "(a replicate run with --seeds 1 has nothing to average)")
    test = data.load_task(str(folder / f"split{s}.jsonl")).test  # class ids as the members were trained on
    accs, acc, cfg = split_scores(seeds, test.text, test.label)
    seed_means.append(float(np.mean(accs)))
    ens.append(acc)
    mem = mem or ensemble_bytes(cfg, len(seeds))
    print(f"  trial {point['trial']} split {s}: seeds {', '.join(f'{100 * a:.2f}' for a in accs)}, "
          f"ensemble {100 * acc:.2f}", flush=True)
  gain = replicate.gap_summary([e - m for e, m in zip(ens, seed_means)])
  return dict(trial=point["trial"], config=point["config"], k=len(seeds), single_bytes=mem[0],
              ensemble_bytes=mem[1], seed_mean=float(np.mean(seed_means)), ensemble=float(np.mean(ens)),
              gain=gain)


def table(task_rows: list[tuple[str, list[dict]]]) -> str:
  head = ("| task | point | one model | k-seed ensemble | seed mean over splits | ensemble over splits | "
          "gain [95 % t over splits] | splits gained |\n|---|---|---|---|---|---|---|---|\n")
  lines = []
  for task, rows in task_rows:
    for r in rows:
      g = r["gain"]
      lines.append(f"| {task} | trial {r['trial']}, {r['config']} | {r['single_bytes'] / 1e3:,.1f} kB | "
                   f"{r['k']} x: {r['ensemble_bytes'] / 1e3:,.1f} kB | {100 * r['seed_mean']:.2f} | "
                   f"{100 * r['ensemble']:.2f} | {100 * g['mean']:+.2f} [{100 * g['low']:+.2f}, "
                   f"{100 * g['high']:+.2f}] | {g['wins']} of {g['splits']} |")
  return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("folders", nargs="+", type=Path, help="--out folders of python -m embbert_jax.replicate")
  ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
  args = ap.parse_args(argv)
  task_rows = []
  for folder in args.folders:
    path = folder / "replicates.json"
    if not path.is_file():
      raise SystemExit(f"error: {path} does not exist (not a replicate --out folder)")
    rep = json.loads(path.read_text())
    print(f"{folder} ({rep['task']})", flush=True)
    task_rows.append((rep["task"], [point_rows(folder, p) for p in rep["points"]]))
  text = table(task_rows)
  print(text)
  if args.out:
    files.write_text_atomic(args.out, text)


if __name__ == "__main__":
  sys.exit(main())
