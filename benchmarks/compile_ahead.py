"""Does compiling the next trial on a second thread pay on this machine? (`sweep --compile-ahead`)

    python benchmarks/compile_ahead.py                 # amazon, the two configs below
    python benchmarks/compile_ahead.py --task rt_polarity --nice 19

Two measurements, each with a new, empty persistent compilation cache in a temporary folder:
1. a train step's rate alone and while another config's programs compile on a thread (precompile.py), as
   a sweep worker's trial trains beside CompileAhead; the CPU seconds that compile takes per wall second;
2. one rung-0 trial's compile and initial-params seconds: cold, then (a fresh process's view: the
   in-memory programs released) after precompile put its programs in the cache.
Where the step slows by about what the compile takes (a CPU with few cores), compiling ahead moves the
work without shrinking it; where it does not (an accelerator trains), it hides the compile.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from embbert_jax import configs, loop, precompile, programs, train
import machine

TRAINS = {"model.vocab_size": 2048, "model.max_len": 64, "model.hidden": 64, "model.num_layers": 2}
COMPILES = {"model.vocab_size": 2048, "model.max_len": 128, "model.hidden": 32, "model.embed_dim": 32,
            "model.conv_kernel": 32, "model.num_layers": 4}


def trial_config(task: str, fields: dict):
  """A sweep's rung-0 call (two rungs of 307 / 920 steps, widths priced over 511) of a default-space config."""
  cfg = train.get_config("embbert")
  train.apply_recipe(cfg, "auto")
  for k, v in {"task": task, "steps": 920, "stop_at": 307, "eval_every": 153, "bucket_steps": 511,
               "wandb.mode": "disabled", **fields}.items():
    configs.set_field(cfg, k, v)
  return cfg


def fresh_cache(folder: str) -> None:
  """A new, empty persistent cache in `folder` (JAX sets its cache up once per process: reset it first)."""
  from jax._src import compilation_cache  # no public way to move an initialised cache
  compilation_cache.reset_cache()
  train.enable_compilation_cache(folder)
  programs.release_programs()


def cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def steps_beside_a_compile(task: str, nice: int, seconds: float) -> dict:
  cfg = trial_config(task, TRAINS)
  t, _, enc = loop.prepare_task(cfg)
  cfg = configs.with_fields(cfg, {"model.num_labels": t.num_labels})
  progs = programs.programs_for(cfg, "classify", t.is_regression, 920)
  params = programs.init_members(cfg.model, [0])
  state = progs.init(np.array([0], np.int32), np.array([1e-3], np.float32), np.array([0.05], np.float32),
                     params, {})
  shard = NamedSharding(loop.make_mesh(), P(None, "data"))
  arrays = enc["train"]
  batch = {"ids": jax.device_put(arrays.ids[None, :cfg.batch_size], shard),
           "labels": jax.device_put(arrays.labels[None, :cfg.batch_size], shard)}
  box = {"state": state}

  def rate(secs: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
      box["state"], m = progs.step(box["state"], batch)
      jax.block_until_ready(m)
      n += 1
    return n / (time.perf_counter() - t0)

  rate(1.0)  # compiled and warm
  alone = rate(seconds)
  out: dict = {}

  def compile_other():
    if nice:
      os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    t0 = time.perf_counter()
    out["programs"] = precompile.precompile(trial_config(task, COMPILES))["programs"]
    out["compile_s"] = time.perf_counter() - t0

  th = threading.Thread(target=compile_other)
  th.start()
  time.sleep(1.0)
  beside = rate(seconds)
  th.join()
  return {"alone": alone, "beside": beside, **out}


def compile_alone(task: str) -> dict:
  """CPU seconds per wall second of precompile alone (no training beside it)."""
  t0, c0 = time.perf_counter(), cpu_seconds()
  n = precompile.precompile(trial_config(task, COMPILES))["programs"]
  wall = time.perf_counter() - t0
  return {"programs": n, "wall_s": wall, "cores": (cpu_seconds() - c0) / wall}


def trial_compile(task: str, ahead: bool) -> dict:
  cfg = trial_config(task, COMPILES)
  if ahead:
    precompile.precompile(cfg)
  programs.release_programs()
  with tempfile.TemporaryDirectory() as d:
    tm = train.train_and_evaluate(cfg, Path(d))["timing"]
  return {"compile_s": tm["compile_s"], "init_s": tm["init_s"], "train_s": tm["train_s"]}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--task", default="amazon")
  ap.add_argument("--nice", type=int, default=0, help="the compiling thread's nice value (Linux, per thread)")
  ap.add_argument("--seconds", type=float, default=15.0, help="how long each step rate is timed")
  args = ap.parse_args()
  print(machine.describe())
  describe = lambda f: " ".join(f"{k.split('.')[-1]}={v}" for k, v in f.items())
  for name, run in (("alone", lambda: compile_alone(args.task)),
                    ("beside", lambda: steps_beside_a_compile(args.task, args.nice, args.seconds))):
    with tempfile.TemporaryDirectory() as cache:
      fresh_cache(cache)
      r = run()
    if name == "alone":
      print(f"compile of {describe(COMPILES)} alone: {r['programs']} programs in {r['wall_s']:.1f} s, "
            f"{r['cores']:.2f} cores busy")
    else:
      print(f"step of {describe(TRAINS)}: {r['alone']:.1f} steps/s alone, {r['beside']:.1f} beside that compile "
            f"({r['beside'] / r['alone']:.2f}x; compiling thread nice {args.nice}), which took {r['compile_s']:.1f} s")
  for ahead in (False, True):
    with tempfile.TemporaryDirectory() as cache:
      fresh_cache(cache)
      r = trial_compile(args.task, ahead)
    print(f"a rung-0 trial of that config, {'after precompile' if ahead else 'cold'}: compile {r['compile_s']:.1f} s, "
          f"initial params {r['init_s']:.1f} s, steps {r['train_s']:.1f} s")


if __name__ == "__main__":
  main()
