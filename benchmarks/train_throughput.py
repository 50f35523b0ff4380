"""Train-step throughput and compile time per preset at batch 32 (random ids; no data needed).

    python benchmarks/train_throughput.py                       # every preset, full length L
    python benchmarks/train_throughput.py --presets embbert nano --seq-len 64 --conv-impl xla shift
    python benchmarks/train_throughput.py --presets embbert --set model.num_layers=1 --seq-len 32 64 128

For each preset and length: compile time of the jitted train step, steps/s and tokens/s over --steps timed
steps (after one warm-up step), the step's FLOPs from XLA's cost analysis as achieved GFLOP/s, and the
step's milliseconds per GFLOP of the batch's forward pass (programs.width_gflop, what length bucketing
prices a batch width by). A large matmul is timed in the same run, so that each figure can be read as a
fraction of this machine's peak. --set overrides config fields of every preset (`--set model.hidden=64`).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from embbert_jax import configs, losses, models, programs, train
from machine import describe, matmul_gflops, matmul_size


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled program, from XLA's cost analysis."""
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))


def make_step(cfg, seed: int = 0):
  """(jitted classification train step, initial state): the step `loop.fit` runs, state donated."""
  model = models.build_model(cfg.model)
  params = models.init_params(cfg.model, jax.random.key(seed))
  opt = losses.make_optimizer(cfg, cfg.learning_rate)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt.init(params)}
  step = jax.jit(programs.make_train_step(lambda p, bb, r: losses.classify_loss(model, p, bb, r, False), opt),
                 donate_argnums=0)
  return step, state


def random_batch(cfg, batch: int, length: int) -> dict:
  rng = np.random.RandomState(0)
  ids = rng.randint(5, cfg.model.vocab_size, (batch, length)).astype(np.int32)
  return {"ids": jnp.asarray(ids), "labels": jnp.asarray(rng.randint(0, 2, batch).astype(np.int32))}


def bench(preset: str, seq_len: int, batch: int, steps: int, conv_impl: str, overrides: tuple = ()) -> dict:
  cfg = train.get_config(preset, conv_impl=conv_impl)
  for item in overrides:
    configs.set_field(cfg, *item.split("=", 1))
  length = seq_len or cfg.model.max_len
  b = random_batch(cfg, batch, length)
  step, state = make_step(cfg)
  t = time.perf_counter()
  compiled = step.lower(state, b, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - t
  flops = step_flops(compiled)
  state, m = compiled(state, b, jax.random.key(0))
  jax.block_until_ready(m)
  t = time.perf_counter()
  for i in range(steps):
    state, m = compiled(state, b, jax.random.key(i))
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t) / steps
  forward_gflop = float(programs.width_gflop(cfg.model, [length])[0]) * batch
  return {"preset": preset, "conv_impl": conv_impl, "L": length, "compile_s": compile_s, "steps_per_s": 1 / dt,
          "tokens_per_s": batch * length / dt, "gflop_per_step": flops / 1e9, "gflops": flops / dt / 1e9,
          "ms_per_forward_gflop": 1e3 * dt / forward_gflop}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--presets", nargs="+", default=list(configs.PRESETS))
  ap.add_argument("--seq-len", type=int, nargs="+", default=[0], help="0 = each preset's max_len")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a config field of every preset (repeatable)")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--conv-impl", nargs="+", default=["auto"], choices=["auto", "xla", "shift"])
  args = ap.parse_args()
  peak = matmul_gflops()
  n = matmul_size()
  print(f"{describe()}; {n}^2 f32 matmul: {peak:.1f} GFLOP/s")
  if args.set:
    print("overrides: " + " ".join(args.set))
  print("| preset | conv | L | compile s | steps/s | tokens/s | GFLOP/step | GFLOP/s | % of matmul | "
        "step ms per forward GFLOP |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for p in args.presets:
    for impl in args.conv_impl:
      for seq_len in args.seq_len:
        r = bench(p, seq_len, args.batch, args.steps, impl, tuple(args.set))
        print(f"| {p} | {impl} | {r['L']} | {r['compile_s']:.1f} | {r['steps_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
              f"{r['gflop_per_step']:.2f} | {r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f} % | "
              f"{r['ms_per_forward_gflop']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
