"""Where a train step spends its time: XLA's ops by time, and the step under each conv lowering.

    python benchmarks/step_profile.py                                   # headline at L = 256: top 30 ops
    python benchmarks/step_profile.py --preset nano --length 96 --top 20
    python benchmarks/step_profile.py --compare toeplitz shift_vjp      # steps/s per lowering, interleaved
    python benchmarks/step_profile.py --hlo step.hlo                    # also write the compiled HLO

The profile runs the jitted classification step (train_throughput.make_step, batch 32 of random ids at
the given length) under `jax.profiler.trace` with a Perfetto trace, sums each XLA op's time over the
traced steps and matches the op to its line in the compiled HLO by name, so every row says what the op
is (its shape, the fused computation's kind) and which line of the model made it (the `op_name`
metadata). The profiler slows the step down (about 1.3x here): read the rows as shares, and take step
times from `--compare`, which times the compiled steps without the profiler in interleaved rounds (the
best round of each kept, as `torch_step.py` does).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax

from embbert_jax import configs, train
from train_throughput import make_step, random_batch


def compiled_step(preset: str, length: int, batch: int, conv_impl: str = "auto", overrides=()):
  """(compiled step, its arguments) for one preset (with "field=value" `overrides`, as train's --set)
  at one length: train_throughput.make_step's step, whose state is donated, so callers thread it."""
  cfg = configs.apply_overrides(train.get_config(preset, conv_impl=conv_impl), overrides)
  step, state = make_step(cfg)
  args = (state, random_batch(cfg, batch, length), jax.random.key(0))
  return step.lower(*args).compile(), args


def _run(compiled, args, steps: int):
  """`steps` steps from args, the state threaded; returns the arguments for the next call."""
  state, rest = args[0], args[1:]
  for _ in range(steps):
    state, _ = compiled(state, *rest)
  jax.block_until_ready(state)
  return (state, *rest)


def op_table(compiled, args, steps: int, top: int) -> list[str]:
  """The `top` XLA ops by time per step under the profiler, each with its HLO line and source op."""
  args = _run(compiled, args, 1)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      _run(compiled, args, steps)
    trace = next(Path(d).rglob("*perfetto_trace.json.gz"))
    events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  hlo = {}
  for line in compiled.as_text().splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
    if m:
      hlo[m.group(1)] = line.strip()
  total: collections.Counter = collections.Counter()
  for e in events:  # XLA's ops only: not the executor's spans, the dispatch or Python frames
    if e.get("ph") == "X" and e["name"] in hlo:
      total[e["name"]] += e.get("dur", 0)
  all_ms = sum(total.values()) / steps / 1e3
  rows = [f"ops in all: {all_ms:.1f} ms per step under the profiler", "",
          "| ms/step | share | op | shape | from |", "|---|---|---|---|---|"]
  by_part: collections.Counter = collections.Counter()
  for name, us in total.items():
    by_part[part_of(_source(hlo.get(name, "")))] += us
  for name, us in total.most_common(top):
    line = hlo.get(name, "")
    shape = line.split(" = ", 1)[1].split(" ", 1)[0] if " = " in line else "?"
    rows.append(f"| {us / steps / 1e3:.2f} | {us / steps / 1e3 / all_ms:.1%} | {name} | {shape} "
                f"| {_source(line)[-80:]} |")
  rows += ["", "| part of the model (forward and backward, all layers) | ms/step | share |", "|---|---|---|"]
  rows += [f"| {part} | {us / steps / 1e3:.1f} | {us / steps / 1e3 / all_ms:.1%} |"
           for part, us in by_part.most_common()]
  return rows


def _source(hlo_line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', hlo_line)
  return m.group(1).replace("jit(train_step)/", "") if m else ""


def part_of(source: str) -> str:
  """The model part an op's source path names, layers merged: 'attention', 'conv_branch/conv',
  'embedder', 'optimizer', ... ('other' when the op carries no source)."""
  path = [p for p in re.split(r"[/()]", source) if p and not p.startswith(("jvp", "transpose", "jit"))]
  if "encoder" in path:
    rest = path[path.index("encoder") + 1:]
    rest = [p for p in rest if not re.fullmatch(r"layer_\d+", p)]
    keep = rest[:2] if rest[:1] == ["conv_branch"] else rest[:1]
    return "/".join(keep) or "encoder"
  if any(p in ("head", "ClassifierHead") for p in path):
    return "head"
  if not source:
    return "other"
  if "Classifier" in source:
    return "loss and head"
  return "optimizer and step"


def compare(preset: str, length: int, batch: int, impls: list[str], rounds: int, steps: int,
            overrides=()) -> list[str]:
  """ms per step of each conv lowering, interleaved rounds, the best round of each."""
  runs = {i: list(compiled_step(preset, length, batch, i, overrides)) for i in impls}
  best = dict.fromkeys(impls, float("inf"))
  for _ in range(rounds):
    for impl, run in runs.items():
      run[1] = _run(run[0], run[1], 1)
      t = time.perf_counter()
      run[1] = _run(run[0], run[1], steps)
      best[impl] = min(best[impl], (time.perf_counter() - t) / steps)
  base = best[impls[0]]
  return ["| conv lowering | ms/step | steps/s | vs " + impls[0] + " |", "|---|---|---|---|"] + [
      f"| {i} | {best[i] * 1e3:.1f} | {1 / best[i]:.2f} | {base / best[i]:.2f}x |" for i in impls]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="embbert")
  ap.add_argument("--length", type=int, default=256)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--top", type=int, default=30, help="rows of the op table (0: no profile)")
  ap.add_argument("--steps", type=int, default=5, help="steps per profile / per timing round")
  ap.add_argument("--compare", nargs="*", default=[], metavar="IMPL",
                  help="conv lowerings to time against each other, e.g. toeplitz shift_vjp")
  ap.add_argument("--rounds", type=int, default=8)
  ap.add_argument("--hlo", type=Path, help="write the compiled step's HLO text here")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config field over the preset, as train's --set, e.g. --set model.hidden=32")
  args = ap.parse_args()
  print(f"{args.preset} {' '.join(args.set)}, L = {args.length}, batch {args.batch}, {jax.default_backend()}")
  if args.top or args.hlo:
    compiled, call = compiled_step(args.preset, args.length, args.batch, overrides=args.set)
    if args.hlo:
      args.hlo.write_text(compiled.as_text())
    if args.top:
      print("\n".join(op_table(compiled, call, args.steps, args.top)))
  if args.compare:
    print("\n".join(compare(args.preset, args.length, args.batch, args.compare, args.rounds, args.steps,
                            args.set)))


if __name__ == "__main__":
  main()
