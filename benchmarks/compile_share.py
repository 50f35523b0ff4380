"""Compile time as a share of a sweep's wall time, with a cold and then a warm persistent cache.

    python benchmarks/compile_share.py                                  # 4 trials x 100 steps, 2 MB
    python benchmarks/compile_share.py --max-trials 12 --steps 400      # the default sweep
    python benchmarks/compile_share.py --time-budget 5m --tasks tweets rt_polarity   # a second task

Runs `python -m embbert_jax.sweep --budget B ...` twice in fresh processes on one new, empty
compilation cache folder (EMBBERT_JAX_COMPILATION_CACHE): the first run compiles everything (cold),
the second, a new study in a new output folder, finds its programs in the cache (warm). With `--tasks
A B` the warm run is a sweep of task B after one of task A (what a user running sweeps on several tasks
gets), and B also runs cold on a cache of its own, for comparison. `--time-budget` runs the default
multi-fidelity sweep within that time instead of `--max-trials` x `--steps`. JAX reports every tracing,
lowering and backend compile (or cache load) through jax.monitoring, and embbert_jax.executables each load
of a kept executable (which skips the other three); their sum over the process is the compile time. Data
and tokenizers come from the usual cache, so no run pays for them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
          "/jax/core/compile/backend_compile_duration", "/embbert_jax/executables/load_duration")

RUNNER = """
import json, sys, time
import jax.monitoring
totals = {{}}
def on_duration(event, seconds, **kw):
  totals[event] = totals.get(event, 0.0) + seconds
jax.monitoring.register_event_duration_secs_listener(on_duration)
t0 = time.perf_counter()
from embbert_jax import sweep
code = sweep.main({argv!r})
print("TIMES" + json.dumps({{"wall_s": time.perf_counter() - t0, "code": code, **totals}}))
"""


def run_python(script: str, env: dict, what: str, marker: str = "TIMES") -> dict:
  """Runs `script` in a fresh Python process; returns the JSON it printed after `marker` (kept_programs.py
  runs its trials through this too)."""
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
  if out.returncode != 0 or marker not in out.stdout:
    raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.rsplit(marker, 1)[1])


def run_sweep(argv: list[str], cache: Path) -> dict:
  env = {**os.environ, "EMBBERT_JAX_COMPILATION_CACHE": str(cache), "WANDB_MODE": "disabled"}
  return run_python(RUNNER.format(argv=argv), env, "the sweep")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--budget", default="2MB")
  ap.add_argument("--max-trials", type=int, default=4)
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--space", default="default")
  ap.add_argument("--time-budget", default="", help="e.g. 4m: the multi-fidelity sweep within this time")
  ap.add_argument("--tasks", nargs=2, metavar=("A", "B"), help="warm: task B's sweep after task A's")
  ap.add_argument("--no-cold-b", action="store_true", help="with --tasks: skip B's own cold run")
  args = ap.parse_args()
  size = (["--time-budget", args.time_budget] if args.time_budget
          else ["--max-trials", str(args.max_trials), "--steps", str(args.steps)])
  runs = [("cold", None, "xla"), ("warm", None, "xla")]  # (name, task, cache folder)
  if args.tasks:
    a, b = args.tasks
    runs = [(f"{a}, cold", a, "xla"), (f"{b} after {a}", b, "xla")]
    if not args.no_cold_b:
      runs.insert(0, (f"{b}, cold", b, "xla-b"))
  print("| run | cache | sweep wall s | trials | trace s | lower s | compile / cache load s "
        "| executables load s | compile share |")
  print("|---|---|---|---|---|---|---|---|---|")
  used: set[str] = set()  # cache folders a run has filled: the next run on one of them is warm
  with tempfile.TemporaryDirectory() as tmp:
    for i, (name, task, cache) in enumerate(runs):
      state = "warm" if cache in used else "cold"
      used.add(cache)
      out = Path(tmp) / f"sweep-{i}"
      argv = ["--budget", args.budget, *size, "--space", args.space, "--no-wandb", "--out", str(out),
              "--study", f"compile-share-{i}"] + (["--task", task] if task else [])
      t = run_sweep(argv, Path(tmp) / cache)
      parts = [t.get(e, 0.0) for e in EVENTS]
      trials = sum(1 for _ in (out / "trials").iterdir()) if (out / "trials").is_dir() else 0
      print(f"| {name} | {state} | {t['wall_s']:.0f} | {trials} | "
            f"{parts[0]:.1f} | {parts[1]:.1f} | {parts[2]:.1f} | {parts[3]:.1f} | "
            f"{100 * sum(parts) / t['wall_s']:.1f} % |",
            flush=True)


if __name__ == "__main__":
  main()
