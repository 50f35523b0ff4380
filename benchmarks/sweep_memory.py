"""Does a long sweep's memory stay flat? Trains many distinct shapes one after another in one process, as a
sweep worker does, and prints the resident memory and the number of memory mappings after each.

    python benchmarks/sweep_memory.py                    # 24 shapes of the default space, 30 steps each
    python benchmarks/sweep_memory.py --trials 50 --steps 30 --cache-size 1000     # keep every program

Each compiled XLA:CPU program maps its machine code into the process; a worker that kept every shape's
programs grew past 5 GB and, near the kernel's limit of 65,530 mappings, died in LLVM ("Cannot allocate
memory", then a segfault) 15 minutes into a 45-minute sweep. `--cache-size` sets how many shapes' programs
stay before all are flushed (programs.PROGRAM_CACHE_SIZE). Data and tokenizers come from the usual cache.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def mappings() -> int:
  with open("/proc/self/maps") as f:
    return sum(1 for _ in f)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--trials", type=int, default=24)
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--budget", default="2MB")
  ap.add_argument("--cache-size", type=int, default=None,
                  help="programs.PROGRAM_CACHE_SIZE (default: as shipped; 1000: keep every shape, as before)")
  ap.add_argument("--clear", action="store_true", help="jax.clear_caches() before every trial")
  ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after every trial")
  args = ap.parse_args()
  from embbert_jax import hostmem, memory, programs, space as space_lib, train
  from machine import describe
  if args.cache_size is not None:
    programs.PROGRAM_CACHE_SIZE = args.cache_size
  train.enable_compilation_cache()
  space = space_lib.load("default")
  fitting = space_lib.spread_order(space_lib.fits(space_lib.enumerate_space(space, 2), "fp32",
                                                  memory.parse_budget(args.budget)), "fp32")
  # One vocabulary: the tokenizer is not what is measured.
  cands = [c for c in fitting if c.model.vocab_size == 2048][:args.trials]
  print(f"{describe()}; {len(cands)} shapes x "
        f"{args.steps} steps; program cache {programs.PROGRAM_CACHE_SIZE} shapes")
  print("trial  rss_MB  malloc_free_MB  mappings  config")
  with tempfile.TemporaryDirectory() as tmp:
    for i, c in enumerate(cands):
      cfg = train.get_config()
      cfg.model = c.model.to_dict()
      train.apply_recipe(cfg)
      cfg.steps, cfg.eval_every, cfg.wandb.mode = args.steps, args.steps, "disabled"
      if args.clear:
        import jax
        jax.clear_caches()
      train.train_and_evaluate(cfg, Path(tmp) / f"t{i}")
      if args.trim:
        hostmem.trim_heap()  # what a sweep worker does after each trial
      print(f"{i:5d}  {hostmem.rss_mb():6.0f}  {hostmem.heap_free_mb():14.0f}  {mappings():8d}  {c.describe()}", flush=True)


if __name__ == "__main__":
  main()
