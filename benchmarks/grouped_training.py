"""Many small trainings at once: grouped (vmapped) vs one at a time, and against the authors' style.

    python benchmarks/grouped_training.py                              # embbert (2 MB) and nano, G=1,4,16,64
    python benchmarks/grouped_training.py --presets nano --groups 1 16 --steps 5

Everything runs on rt_polarity's real training batches (the auto length, 96) through the programs
`train.fit` runs (`train.programs_for`: the vmapped step over stacked params and optimiser states).
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
from embbert_jax import train
from train_throughput import matmul_gflops


def group_state(cfg, g: int):
  progs = train.programs_for(cfg)
  params = train.init_members(cfg.model, list(range(g)))
  ones = np.ones(g, np.float32)
  state = progs.init(np.arange(g, dtype=np.int32), ones * cfg.learning_rate, ones * cfg.weight_decay, params, {})
  return progs, state


def real_batches(arrays, cfg, g: int, n: int, length: int | None = None):
  """n (G, B, L) batches of rt_polarity, member i in seed i's order (as fit assembles them)."""
  streams = [batch_lib.train_batches(arrays, cfg.batch_size, seed) for seed in range(g)]
  out = []
  for _, parts in zip(range(n), zip(*streams)):
    b = batch_lib.stack_batches([p for _, p in parts])
    if length and b["ids"].shape[2] < length:
      b["ids"] = np.pad(b["ids"], ((0, 0), (0, 0), (0, length - b["ids"].shape[2])))
    out.append(b)
  return out


def time_group(cfg, arrays, g: int, steps: int, sync_every_step: bool = False, length: int | None = None):
  """(compile s, seconds per group step, XLA flops per group step, real tokens per group step)."""
  progs, state = group_state(cfg, g)
  batches = real_batches(arrays, cfg, g, steps + 1, length)
  t = time.perf_counter()
  compiled = progs.step.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
  state, m = compiled(state, batches[0])
  jax.block_until_ready(m)
  t = time.perf_counter()
  for b in batches[1:]:
    state, m = compiled(state, b)
    if sync_every_step:
      float(m["loss"][0])  # what `loss.item()` in a PyTorch loop does
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t) / steps
  tokens = float(np.mean([(b["ids"] != 0).sum() for b in batches[1:]]))
  return compile_s, dt, flops, tokens


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--presets", nargs="+", default=["embbert", "nano"])
  ap.add_argument("--groups", nargs="+", type=int, default=[1, 4, 16, 64])
  ap.add_argument("--steps", type=int, default=4, help="timed group steps per measurement")
  ap.add_argument("--trial-steps", type=int, default=400, help="steps of one trial (the sweep's default)")
  ap.add_argument("--impls", nargs="+", default=["vmap", "map"], help="train.over_members lowerings")
  ap.add_argument("--no-authors", action="store_true", help="skip the authors'-style baseline")
  args = ap.parse_args()
  train.enable_compilation_cache("")  # cold compiles: the compile column is what a first run pays
  peak = matmul_gflops()
  print(f"{jax.devices()[0].device_kind} ({jax.device_count()} device(s)); 2048^2 f32 matmul: {peak:.1f} "
        f"GFLOP/s\n")
  print("| preset | G | members as | compile s | group step s | member-steps/s | real tok/s | GFLOP/s | % of matmul "
        "| trials/h grouped | trials/h one at a time | speedup |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  rows = []
  for preset in args.presets:
    cfg = train.get_config(preset)
    enc = train.prepare_task(cfg)[2]
    cfg.group_impl = "map"  # a group of one: the plain step
    base = time_group(cfg, enc["train"], 1, args.steps)
    for g in args.groups:
      for impl in (["map"] if g == 1 else args.impls):
        cfg.group_impl = impl
        c_s, dt, _, tok = base if g == 1 else time_group(cfg, enc["train"], g, args.steps)
        flops = g * base[2]  # useful FLOPs (XLA counts a lax.map loop body once, whatever G)
        seq_s = base[0] + g * args.trial_steps * base[1]
        grp_s = c_s + args.trial_steps * dt
        row = dict(preset=preset, g=g, impl=impl, compile_s=c_s, step_s=dt, gflops=flops / dt / 1e9,
                   tph_group=g * 3600 / grp_s, tph_seq=g * 3600 / seq_s, speedup=seq_s / grp_s)
        rows.append(row)
        print(f"| {preset} | {g} | {impl if g > 1 else 'one'} | {c_s:.1f} | {dt:.3f} | {g / dt:.1f} | "
              f"{tok / dt:,.0f} | {row['gflops']:.1f} | {100 * row['gflops'] / peak:.1f} % | "
              f"{row['tph_group']:.0f} | {row['tph_seq']:.0f} | {row['speedup']:.2f}x |", flush=True)
  if not args.no_authors:
    cfg = train.get_config("embbert")
    cfg.seq_len, cfg.group_impl = cfg.model.max_len, "map"
    enc = train.prepare_task(cfg)[2]
    c_a, dt_a, _, tok_a = time_group(cfg, enc["train"], 1, args.steps, sync_every_step=True)
    ours = max((r for r in rows if r["preset"] == "embbert"), key=lambda r: r["tph_group"], default=None)
    print(f"\nauthors' style (headline, one trial at a time, L=256 padding, host sync every step): "
          f"{1 / dt_a:.2f} steps/s, {tok_a / dt_a:,.0f} real tok/s, "
          f"{3600 / (c_a + args.trial_steps * dt_a):.1f} trials/h of {args.trial_steps} steps")
    if ours:
      print(f"ours (auto length 96, G={ours['g']} {ours['impl']}): {ours['tph_group']:.1f} trials/h = "
            f"{ours['tph_group'] * (c_a + args.trial_steps * dt_a) / 3600:.1f}x the authors' style")


if __name__ == "__main__":
  main()
