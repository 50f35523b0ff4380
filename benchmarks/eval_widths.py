"""One evaluation (validation + test) of a seed group: at the arrays' full width against the run's bucket
widths, with the host reading each batch back before the next is dispatched or once per split.

    python benchmarks/eval_widths.py                                       # headline, sms_spam, 3 seeds
    python benchmarks/eval_widths.py --task rt_polarity --preset nano --rounds 5

The three variants run the programs `loop.fit` evaluates with (`programs.programs_for(...).apply`, one
vmapped forward pass over the group's params) on the task's real validation and test splits:

    full, read per batch:  every batch at the arrays' length, read back batch by batch (before 2026-12-02)
    full, read per split:  the same batches, all dispatched, then read back
    bucketed:              in length order at the run's ladder widths (batches.eval_batches), read per split

Each is compiled before timing (and the bucketed metrics checked against the full width's); the timed rounds
interleave the variants, and the table gives each one's median and its ratio to the first, measured in
the same process. The 2048^2 matmul rate of the same run is printed for context.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from embbert_jax import batches as batch_lib
from embbert_jax import evaluation, loop, programs, train
from machine import describe, matmul_gflops, matmul_size


def per_batch_eval(progs, cfg, enc):
  """The evaluation as it was: full width, each batch's logits read back before the next batch."""
  def evaluate(params_G):
    out = []
    for split in ("validation", "test"):
      arr = enc[split]
      out.append(np.concatenate([np.asarray(progs.apply(params_G, b["ids"]))[:, b["weights"] > 0]
                                 for b in batch_lib.eval_batches(arr, cfg.batch_size)], axis=1))
    return out
  return evaluate


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--preset", default="embbert")
  ap.add_argument("--task", default="sms_spam")
  ap.add_argument("--seeds", type=int, default=3, help="group members evaluated together (a run's --seeds)")
  ap.add_argument("--rounds", type=int, default=5)
  args = ap.parse_args(argv)

  print(describe())
  print(f"matmul {matmul_size()}^2 f32: {matmul_gflops():.0f} GFLOP/s")
  cfg = train.get_config(args.preset)
  cfg.task = args.task
  task, _, enc = loop.prepare_task(cfg)
  cfg = train.configs.with_fields(cfg, {"model.num_labels": task.num_labels})
  total = loop.run_length(cfg, len(enc["train"]))
  progs = programs.programs_for(cfg, "classify", task.is_regression, total)
  ladder = programs.bucket_ladder(cfg, enc["train"], total, args.seeds)
  params_G = programs.init_members(cfg.model, list(range(args.seeds)))
  lengths = {s: batch_lib.example_lengths(enc[s].ids) for s in ("validation", "test")}
  print(f"{args.preset} on {args.task}: {args.seeds} members, arrays' width {enc['test'].ids.shape[1]}, ladder "
        f"{ladder}; validation + test {len(enc['validation']) + len(enc['test'])} examples, median length "
        f"{int(np.median(np.concatenate(list(lengths.values()))))}")
  variants = {
      "full, read per batch": per_batch_eval(progs, cfg, enc),
      "full, read per split": evaluation.classify_eval(progs, cfg, enc, task.is_regression),
      "bucketed": evaluation.classify_eval(progs, cfg, enc, task.is_regression, ladder),
  }
  results = {name: fn(params_G) for name, fn in variants.items()}  # compiles every program once
  full, bucketed = ([m["test"]["accuracy"] for m in results[k]] for k in ("full, read per split", "bucketed"))
  if not np.allclose(full, bucketed, atol=1e-6):
    raise SystemExit(f"error: bucketed evaluation gave test accuracies {bucketed}, the full width {full}")
  times = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name, fn in variants.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(params_G))
      times[name].append(time.perf_counter() - t)
  base = statistics.median(times["full, read per batch"])
  print("\n| variant | median s (of %d) | min s | / full, read per batch |" % args.rounds)
  print("|---|---|---|---|")
  for name, ts in times.items():
    print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | {statistics.median(ts) / base:.2f}x |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
