"""Many small trainings at once: grouped (vmapped) vs one at a time, and against the authors' style.

    python benchmarks/grouped_training.py                              # embbert (2 MB) and nano, G=1,4,16,64
    python benchmarks/grouped_training.py --presets nano --groups 1 16 --steps 5

Everything runs on rt_polarity's real training batches (the auto length, 96) through the programs
`loop.fit` runs (`programs.programs_for`: the vmapped step over stacked params and optimiser states).
For each preset and group size G it measures the compile time and the steady-state time of one group
step, and reports member-steps/s and trials/hour for a trial of --trial-steps steps (the sweep's 400):

    one at a time: G trials = one compile (programs are reused across equal shapes) + G x S steps of G=1
    grouped:       G trials = one compile of the G program + S group steps

so the speedup is a ratio measured in the same run. The `authors' style` row is the headline model
trained the way a PyTorch/HF-Trainer loop does it, expressed in our code path: one trial at a time,
batches padded to max_len (256), the loss fetched to the host after every step, no prefetch. A large
matmul timed in the same run gives each step's achieved FLOP/s as a fraction of this machine's rate.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from embbert_jax import batches as batch_lib
from embbert_jax import loop, programs, train
from machine import describe, matmul_gflops, matmul_size
from train_throughput import step_flops


def group_state(cfg, g: int):
  progs = programs.programs_for(cfg)
  params = programs.init_members(cfg.model, list(range(g)))
  ones = np.ones(g, np.float32)
  state = progs.init(np.arange(g, dtype=np.int32), ones * cfg.learning_rate, ones * cfg.weight_decay, params,
                     {})
  return progs, state


def real_batches(arrays, cfg, g: int, n: int):
  """n (G, B, L) batches of rt_polarity, member i in seed i's order (as fit assembles them)."""
  streams = [batch_lib.train_batches(arrays, cfg.batch_size, seed) for seed in range(g)]
  return [batch_lib.stack_batches([p for _, p in parts]) for _, parts in zip(range(n), zip(*streams))]


class Variant:
  """One (preset, G, lowering): compiled once, then timed in several interleaved rounds."""

  def __init__(self, cfg, arrays, g: int, steps: int, sync_every_step: bool = False):
    progs, self.state = group_state(cfg, g)
    self.batches = real_batches(arrays, cfg, g, steps + 1)
    t = time.perf_counter()
    self.compiled = progs.step.lower(self.state, self.batches[0]).compile()
    self.compile_s = time.perf_counter() - t
    self.flops = step_flops(self.compiled)
    self.tokens = float(np.mean([(b["ids"] != 0).sum() for b in self.batches[1:]]))
    self.sync, self.times = sync_every_step, []
    self.state, m = self.compiled(self.state, self.batches[0])
    jax.block_until_ready(m)

  def run(self) -> None:
    """Times the steps once; the kept figure is the fastest round (the least disturbed by other jobs)."""
    t = time.perf_counter()
    for b in self.batches[1:]:
      self.state, m = self.compiled(self.state, b)
      if self.sync:
        float(m["loss"][0])  # what `loss.item()` in a PyTorch loop does
    jax.block_until_ready(m)
    self.times.append((time.perf_counter() - t) / (len(self.batches) - 1))

  @property
  def step_s(self) -> float:
    return min(self.times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--presets", nargs="+", default=["embbert", "nano"])
  ap.add_argument("--groups", nargs="+", type=int, default=[1, 4, 16, 64])
  ap.add_argument("--steps", type=int, default=3, help="timed group steps per round")
  ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the fastest is kept")
  ap.add_argument("--trial-steps", type=int, default=400, help="steps of one trial (the sweep's default)")
  ap.add_argument("--impls", nargs="+", default=["vmap", "map"], help="programs.over_members lowerings")
  ap.add_argument("--no-authors", action="store_true", help="skip the authors'-style baseline")
  args = ap.parse_args()
  train.enable_compilation_cache("")  # cold compiles: the compile column is what a first run pays
  variants: dict[tuple, Variant] = {}
  for preset in args.presets:
    cfg = train.get_config(preset)
    enc = loop.prepare_task(cfg)[2]
    for g in args.groups:
      for impl in (["map"] if g == 1 else args.impls):
        cfg.group_impl = impl  # a group of one under map is the plain step
        variants[preset, g, impl] = Variant(cfg, enc["train"], g, args.steps)
  if not args.no_authors:
    cfg = train.get_config("embbert")
    cfg.seq_len, cfg.group_impl = cfg.model.max_len, "map"
    variants["authors"] = Variant(cfg, loop.prepare_task(cfg)[2]["train"], 1, args.steps,
                                  sync_every_step=True)
  peak = 0.0
  for _ in range(args.rounds):
    peak = max(peak, matmul_gflops())
    for v in variants.values():
      v.run()
  print(f"{describe()}; {matmul_size()}^2 f32 matmul: {peak:.1f} "
        f"GFLOP/s\n")
  print("| preset | G | members as | compile s | group step s | member-steps/s | real tok/s | GFLOP/s "
        "| % of matmul | trials/h grouped | trials/h one at a time | speedup |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  rows = []
  for (preset, g, impl), v in ((k, v) for k, v in variants.items() if k != "authors"):
    base = variants[preset, 1, "map"]
    seq_s = base.compile_s + g * args.trial_steps * base.step_s
    grp_s = v.compile_s + args.trial_steps * v.step_s
    gflops = g * base.flops / v.step_s / 1e9  # useful FLOPs (XLA counts a lax.map body once, whatever G)
    row = dict(preset=preset, g=g, impl=impl, tph_group=g * 3600 / grp_s, speedup=seq_s / grp_s)
    rows.append(row)
    print(f"| {preset} | {g} | {impl if g > 1 else 'one'} | {v.compile_s:.1f} | {v.step_s:.3f} | "
          f"{g / v.step_s:.1f} | {v.tokens / v.step_s:,.0f} | {gflops:.1f} | {100 * gflops / peak:.1f} % | "
          f"{row['tph_group']:.0f} | {g * 3600 / seq_s:.0f} | {row['speedup']:.2f}x |")
  if "authors" in variants:
    a = variants["authors"]
    a_s = a.compile_s + args.trial_steps * a.step_s
    print(f"\nauthors' style (headline, one trial at a time, L=256 padding, host sync every step): "
          f"{1 / a.step_s:.2f} steps/s, {a.tokens / a.step_s:,.0f} real tok/s, {3600 / a_s:.1f} trials/h "
          f"of {args.trial_steps} steps")
    for r in rows:
      if r["preset"] == "embbert":
        print(f"ours, headline at the auto length 96, G={r['g']} {r['impl']}: {r['tph_group']:.1f} trials/h "
              f"= {r['tph_group'] * a_s / 3600:.1f}x the authors' style")


if __name__ == "__main__":
  main()
