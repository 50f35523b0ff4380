"""Compile time as a share of a sweep's wall time, with a cold and then a warm persistent cache.

    python benchmarks/compile_share.py                                  # 4 trials x 100 steps, 2 MB
    python benchmarks/compile_share.py --max-trials 12 --steps 400      # the default sweep

Runs `python -m embbert_jax.sweep --budget B ...` twice in fresh processes on one new, empty
compilation cache folder (EMBBERT_JAX_COMPILATION_CACHE): the first run compiles everything (cold),
the second, a new study in a new output folder, finds its programs in the cache (warm). JAX reports
every tracing, lowering and backend compile (or cache load) through jax.monitoring; their sum over the
process is the compile time. Data and tokenizers come from the usual cache, so neither run pays for them.
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
          "/jax/core/compile/backend_compile_duration")

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


def run_sweep(argv: list[str], cache: Path) -> dict:
  env = {**os.environ, "EMBBERT_JAX_COMPILATION_CACHE": str(cache), "WANDB_MODE": "disabled"}
  out = subprocess.run([sys.executable, "-c", RUNNER.format(argv=argv)], capture_output=True, text=True,
                       env=env)
  if out.returncode != 0 or "TIMES" not in out.stdout:
    raise SystemExit(f"the sweep failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.rsplit("TIMES", 1)[1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--budget", default="2MB")
  ap.add_argument("--max-trials", type=int, default=4)
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--space", default="default")
  args = ap.parse_args()
  print("| cache | sweep wall s | trace s | lower s | compile/load s | compile share |")
  print("|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for name in ("cold", "warm"):
      argv = ["--budget", args.budget, "--max-trials", str(args.max_trials), "--steps", str(args.steps),
              "--space", args.space, "--no-wandb", "--out", str(Path(tmp) / f"sweep-{name}"),
              "--study", f"compile-share-{name}"]
      t = run_sweep(argv, Path(tmp) / "xla")
      parts = [t.get(e, 0.0) for e in EVENTS]
      print(f"| {name} | {t['wall_s']:.0f} | {parts[0]:.1f} | {parts[1]:.1f} | {parts[2]:.1f} | "
            f"{100 * sum(parts) / t['wall_s']:.1f} % |", flush=True)


if __name__ == "__main__":
  main()
