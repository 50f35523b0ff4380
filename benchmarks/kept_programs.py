"""A trial's compile when its programs are loaded as kept executables (executables.py) against JAX's
persistent cache alone.

    python benchmarks/kept_programs.py                       # amazon, a 4-layer default-space config
    python benchmarks/kept_programs.py --task rt_polarity --rounds 5

One new, empty cache folder; every run is a fresh process, as a sweep's trial after a flush or a second
sweep sees it: first a cold run (its programs compiled, kept by both caches), then `--rounds` alternating
pairs of JAX's persistent cache alone (EMBBERT_JAX_EXECUTABLES=0: trace, lower, load) and the kept
executables (load only). Each run is the sweep's rung-0 call of one default-space config (compile_ahead.py's
trial_config). Prints each run's compile and initial-params seconds as the trainer counts them (first
step and evaluation over their steady cost) and jax.monitoring's totals, then the medians per mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import machine
from compile_share import EVENTS as EVENT_NAMES, run_python

EVENTS = dict(zip(("trace", "lower", "compile/load", "kept load"), EVENT_NAMES))  # compile_share's four

RUNNER = """
import json, sys
sys.path.insert(0, {here!r})
import jax.monitoring
totals = {{}}
def on(event, seconds, **kw):
  totals[event] = totals.get(event, 0.0) + seconds
jax.monitoring.register_event_duration_secs_listener(on)
from compile_ahead import COMPILES, trial_config
from embbert_jax import executables, loop, train
train.enable_compilation_cache({cache!r})
cfg = trial_config({task!r}, COMPILES)
[res] = loop.train_group([cfg], [__import__("pathlib").Path({workdir!r})])
print("RESULT" + json.dumps(dict(timing=res["timing"], totals=totals, stats=dict(executables.STATS),
                                 acc=res["test"]["accuracy"])))
"""


def run(task: str, cache: Path, workdir: Path, kept: bool) -> dict:
  env = {**os.environ, "EMBBERT_JAX_EXECUTABLES": "1" if kept else "0", "WANDB_MODE": "disabled"}
  env.pop("EMBBERT_JAX_COMPILATION_CACHE", None)
  script = RUNNER.format(here=str(Path(__file__).parent), cache=str(cache), task=task, workdir=str(workdir))
  return run_python(script, env, "the run", marker="RESULT")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--task", default="amazon")
  ap.add_argument("--rounds", type=int, default=3)
  args = ap.parse_args()
  print(machine.describe())
  print("| run | compile s | initial params s | " + " | ".join(f"{k} s" for k in EVENTS)
        + " | kept: loaded / compiled | test accuracy |")
  print("|---|---|---|" + "---|" * len(EVENTS) + "---|---|")
  sums: dict[str, list[float]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    pair = (("JAX's cache", False), ("kept", True))
    modes = [("cold", True)] + [m for _ in range(args.rounds) for m in pair]
    for i, (name, kept) in enumerate(modes):
      r = run(args.task, Path(tmp) / "xla", Path(tmp) / f"run{i}", kept)
      tm, tot, st = r["timing"], r["totals"], r["stats"]
      parts = [tot.get(e, 0.0) for e in EVENTS.values()]
      sums.setdefault(name, []).append(tm["compile_s"] + tm["init_s"])
      print(f"| {name} | {tm['compile_s']:.2f} | {tm['init_s']:.2f} | "
            + " | ".join(f"{p:.2f}" for p in parts)
            + f" | {st.get('loaded', 0)} / {st.get('compiled', 0)} | {r['acc']:.4f} |", flush=True)
  medians = ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in sums.items())
  print(f"median compile + initial params: {medians}")


if __name__ == "__main__":
  main()
