"""Compile time against step time of train-step variants, in one process, steps timed in interleaved rounds.

    python benchmarks/compile_options.py                                   # headline, nano, a 2 MB sweep config
    python benchmarks/compile_options.py --configs embbert --lengths 96 256 --variants flat flat,level=1 flat,level=0

A variant is an optimiser layout, optionally with XLA compiler options after a comma: "flat" is the step
`loop.fit` runs (train_throughput.make_step: losses.make_optimizer, which updates all parameters as one flat
vector), "tree" the same clip + AdamW + schedule per parameter tensor with the logged norms per tensor (the
layout before; built here as the baseline); "level=N" is XLA's backend optimisation level (LLVM's -O level
on CPU; XLA's default is 2). Each program is lowered and compiled with the persistent compilation cache
off, --compiles times in alternating order (each compile cold: JAX's caches cleared), and the steps of
every variant run in interleaved rounds (the same process, the same inputs), so a busy machine slows them
alike; the table gives the median compile, the number of fusions (kernels) in the compiled step, the
median step over rounds and both ratios to the first variant's. The machine's matmul rate is timed in the
same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from machine import describe, matmul_gflops
from train_throughput import make_step, random_batch
from embbert_jax import configs, losses, models, recipes, train

# A 2 MB config the 45-minute rt_polarity sweep trains (1.38 MB fp32, conv expansion 2: the toeplitz conv).
SWEEP_2MB = ("model.vocab_size=16384", "model.max_len=128", "model.hidden=64", "model.embed_dim=16",
             "model.conv_expansion=2.0", "model.conv_kernel=16", "model.num_layers=2")
CONFIGS = {"embbert": ("embbert", ()), "nano": ("nano", ()), "sweep-2mb": ("embbert", SWEEP_2MB)}


def compiler_options(specs: list[str]) -> dict:
  """["level=1", "flag=true", "flag=value"] -> {"xla_backend_optimization_level": 1, "flag": True,
  "flag": value} (XLA takes a bool option only as a bool)."""
  out = {}
  for spec in specs:
    key, value = spec.split("=", 1)
    parsed = {"true": True, "false": False}.get(value.lower(), int(value) if value.lstrip("-").isdigit() else value)
    out[{"level": "xla_backend_optimization_level"}.get(key, key)] = parsed
  return out


def tree_step(cfg, total_steps: int):
  """The baseline: clip + AdamW + the schedule per parameter tensor, norms per tensor (the layout before
  losses.make_optimizer flattened it)."""
  opt = losses.with_token_scale(cfg, optax.chain(*losses.update_parts(cfg, total_steps=total_steps)))
  model = models.build_model(cfg.model)
  loss_fn = lambda p, b, r: losses.classify_loss(model, p, b, r, False)

  def step(state, batch, rng):
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, rng)
    updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
    aux = {**aux, "grad_norm": optax.tree.norm(grads), "update_norm": optax.tree.norm(updates)}
    return {**state, "step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state}, aux

  params = models.init_params(cfg.model, jax.random.key(0))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt.init(params)}
  return jax.jit(step, donate_argnums=0), state


def build(cfg, layout: str, total_steps: int):
  if layout == "tree":
    return tree_step(cfg, total_steps)
  if layout == "flat":
    return make_step(cfg)
  raise SystemExit(f"unknown optimiser layout {layout!r}: 'flat' or 'tree'")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  ap.add_argument("--lengths", type=int, nargs="+", default=[64])
  ap.add_argument("--variants", nargs="+", default=["tree", "flat", "flat,level=1"])
  ap.add_argument("--recipe", default="scratch", help="the training recipe (its schedule is in the step)")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--compiles", type=int, default=3, help="cold compiles per variant (median reported)")
  ap.add_argument("--steps", type=int, default=10, help="steps per round")
  ap.add_argument("--rounds", type=int, default=5)
  args = ap.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  print(f"{describe()}; "
        f"2048^2 f32 matmul {matmul_gflops(2048):.0f} GFLOP/s; recipe {args.recipe}, batch {args.batch}")
  print("| config | L | variant | compile s (median) | fusions | step ms (median of rounds) | compile / first | "
        "step / first |")
  print("|---|---|---|---|---|---|---|---|")
  variants = [(v.split(",")[0], compiler_options(v.split(",")[1:])) for v in args.variants]
  for name in args.configs:
    preset, over = CONFIGS[name]
    cfg = recipes.apply(configs.apply_overrides(train.get_config(preset), list(over)), args.recipe)
    cfg.total_steps = 1000
    for length in args.lengths:
      batch = random_batch(cfg, args.batch, length)
      runs = [{"compile_s": [], "times": []} for _ in variants]
      for rep in range(args.compiles):
        order = list(range(len(variants)))
        for i in (order if rep % 2 == 0 else order[::-1]):
          jax.clear_caches()
          step, state = build(cfg, variants[i][0], cfg.total_steps)
          lowered = step.lower(state, batch, jax.random.key(0))
          t = time.perf_counter()
          runs[i]["compiled"] = lowered.compile(variants[i][1])
          runs[i]["compile_s"].append(time.perf_counter() - t)
          runs[i]["state"] = state
      for r in runs:
        r["state"], _ = r["compiled"](r["state"], batch, jax.random.key(0))  # warm-up
      for _ in range(args.rounds):
        for r in runs:
          s = r["state"]
          jax.block_until_ready(s)
          t = time.perf_counter()
          for i in range(args.steps):
            s, m = r["compiled"](s, batch, jax.random.key(i))
          jax.block_until_ready(m)
          r["times"].append((time.perf_counter() - t) / args.steps)
          r["state"] = s
      first_c, first_s = statistics.median(runs[0]["compile_s"]), statistics.median(runs[0]["times"])
      for spec, r in zip(args.variants, runs):
        c, st = statistics.median(r["compile_s"]), statistics.median(r["times"])
        fusions = r["compiled"].as_text().count(" fusion(")
        print(f"| {name} | {length} | {spec} | {c:.2f} | {fusions} | {1e3 * st:.1f} | {c / first_c:.2f} | "
              f"{st / first_s:.2f} |", flush=True)


if __name__ == "__main__":
  main()
