"""The Performance section's measurements on whatever machine this runs on, in one command and one report.

    python benchmarks/device_report.py --out runs/device_report.md             # the rows for the README
    python benchmarks/device_report.py --quick --out /tmp/report.md            # a minute on a CPU: the mechanics
    python benchmarks/device_report.py --parts step grouped --timeout 300      # some parts, each at most 300 s

Made for a lent accelerator (issue 18, item 5), where device time is short and a session may lose the
machine: each part runs as its own process under `--timeout`, and the report (markdown: the machine line,
then each part's command, wall time, exit status and output) is rewritten atomically after every part, so a
part that fails or runs over is recorded and the parts before it are kept. The exit status is 1 if any
part failed. Parts:

- `step`: `train_throughput.py`, the headline and nano train steps at L = 96 and 256 (steps/s, achieved
  GFLOP/s and the fraction of a matmul timed in the same process: the model-FLOPs utilisation against what
  this device's matmul reaches at the models' precision);
- `grouped`: `grouped_training.py`, trials per hour trained as a group of G (vmap and map) against one at
  a time, and the authors' style of loop; it reads rt_polarity's training split, so on a machine without
  network access set EMBBERT_JAX_CACHE to a folder holding `tasks/rt_polarity` (copied from
  ~/.cache/embbert_jax and carried along);
- `torch`: `torch_step.py`, our step against the authors' PyTorch step, on a CPU backend only (it times
  torch on the CPU) and only where torch is installed.

The parent process never imports JAX: on a GPU it would take the device's memory before the parts start.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from embbert_jax.files import write_text_atomic  # noqa: E402  (no JAX import behind it)

FULL = {
  "step": ["train_throughput.py", "--presets", "embbert", "nano", "--seq-len", "96", "256", "--steps", "20"],
  "grouped": ["grouped_training.py", "--presets", "embbert", "nano", "--groups", "1", "16", "64"],
  "torch": ["torch_step.py", "--presets", "embbert", "nano", "--lengths", "96", "256", "--rounds", "3"],
}
QUICK = {
  "step": ["train_throughput.py", "--presets", "nano", "--seq-len", "32", "--steps", "2", "--batch", "8"],
  "grouped": ["grouped_training.py", "--presets", "nano", "--groups", "1", "2", "--steps", "1", "--rounds", "1",
              "--trial-steps", "10", "--no-authors"],
  "torch": ["torch_step.py", "--presets", "nano", "--lengths", "32", "--steps", "1", "--rounds", "1"],
}
PROBE = ("import machine, jax; print(machine.describe()); print(jax.default_backend())\n"
         "import importlib.util; print(importlib.util.find_spec('torch') is not None)")


def run_part(argv: list[str], timeout: float) -> tuple[int | None, float, str]:
  """(exit status or None if it ran over `timeout`, wall seconds, its output)."""
  t = time.perf_counter()
  try:
    p = subprocess.run([sys.executable, *argv], cwd=BENCH, capture_output=True, text=True, timeout=timeout)
    return p.returncode, time.perf_counter() - t, p.stdout + (f"\n[stderr]\n{p.stderr[-3000:]}" if p.returncode else "")
  except subprocess.TimeoutExpired as e:
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return None, time.perf_counter() - t, out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="the report (markdown), rewritten after every part")
  ap.add_argument("--parts", nargs="+", choices=list(FULL), default=list(FULL))
  ap.add_argument("--quick", action="store_true", help="tiny settings: the mechanics in a minute on a CPU")
  ap.add_argument("--timeout", type=float, default=240.0, help="seconds each part may run")
  args = ap.parse_args()
  out = Path(args.out)
  code, _, probe = run_part(["-c", PROBE], args.timeout)
  if code != 0:
    print(f"error: this machine's JAX did not start: {probe.strip().splitlines()[-1:]}", file=sys.stderr)
    return 1
  machine_line, backend, has_torch = probe.strip().splitlines()[-3:]
  lines = [f"# Device report, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", machine_line, ""]
  failed = []
  for part in args.parts:
    argv = (QUICK if args.quick else FULL)[part]
    lines.append(f"## {part}: `python benchmarks/{' '.join(argv)}`\n")
    if part == "torch" and (backend != "cpu" or has_torch != "True"):
      lines.append(f"not run: {'torch is not installed' if backend == 'cpu' else 'it times torch on the CPU, and this backend is ' + backend}\n")
    else:
      print(f"{part}: {' '.join(argv)}", flush=True)
      code, wall, text = run_part(argv, args.timeout)
      status = f"exit {code}" if code is not None else f"ran over --timeout {args.timeout:g} s and was stopped"
      if code != 0:
        failed.append(part)
      lines += [f"{wall:.0f} s, {status}\n", text.rstrip(), ""]
    write_text_atomic(out, "\n".join(lines) + "\n")
  print(f"report: {out}" + (f" (failed: {', '.join(failed)})" if failed else ""))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
