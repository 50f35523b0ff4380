"""Data pipeline and conv lowering benchmarks (issue 8): bucketing, host assembly vs device step, conv.

    python benchmarks/pipeline.py                              # headline preset on rt_polarity, all parts
    python benchmarks/pipeline.py --parts conv --rounds 7      # only the conv lowerings

Every figure is a ratio of timings taken in the same run, interleaved in rounds (each round times every
variant once) so that load from other processes hits all variants alike; medians over rounds (min in
brackets). Parts:

- tokens: real (non-[PAD]) tokens/s of the jitted train step over one rt_polarity epoch, with length
  bucketing (`train_batches(..., bucket_window=64)`) vs fixed padding at the auto length and at L=256.
  The three modes train on exactly the same examples per epoch, so the ratio of tokens/s is the inverse
  ratio of epoch times; an epoch's time is the sum of its batches' step times, each taken from the
  per-width median.
- host: assembling a batch on the host (NumPy gather + trim) per step vs the device step; and an
  end-to-end loop over the first bucketed steps fed from numpy (no prefetch), through `prefetch`, and
  from batches already on the device.
- conv: train-step time of each causal-conv lowering at the auto length and at L=256 (random ids), and
  the conv alone (forward + backward at the headline shape).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from embbert_jax import batches as batch_lib
from embbert_jax import configs, conv, loop, train
from embbert_jax.configs import PAD_ID
from train_throughput import make_step, random_batch

LOWERINGS = ("xla", "shift", "shift_vjp", "toeplitz")
STEP_LOWERINGS = ("xla", "shift", "toeplitz", "auto")  # auto: conv.resolve_conv_impl on this backend


def rounds_of(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, tuple[float, float]]:
  """{name: (median s, min s)} of each blocking call, interleaved: round r times every fn once."""
  times: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


class Stepper:
  """One train step compiled per batch shape, the state threaded through every call (it is donated)."""

  def __init__(self, cfg):
    self.step, self.state = make_step(cfg)
    self.compiled: dict = {}
    self.compile_s = 0.0
    self.key = jax.random.key(0)

  def __call__(self, batch) -> dict:
    shape = batch["ids"].shape
    if shape not in self.compiled:
      t = time.perf_counter()
      self.compiled[shape] = self.step.lower(self.state, batch, self.key).compile()
      self.compile_s += time.perf_counter() - t
    self.state, metrics = self.compiled[shape](self.state, batch, self.key)
    return metrics

  def blocking(self, batch) -> Callable[[], None]:
    return lambda: jax.block_until_ready(self(batch))


def fmt(t: tuple[float, float], scale: float = 1e3) -> str:
  return f"{t[0] * scale:.1f} [{t[1] * scale:.1f}]"


def tokens_part(cfg, arrays: batch_lib.Arrays, auto_len: int, rounds: int, window: int) -> list[str]:
  per_epoch = len(arrays) // cfg.batch_size
  lengths = batch_lib.example_lengths(arrays.ids)
  epoch = batch_lib.epoch_batches(len(arrays), cfg.batch_size, cfg.seed, 0, window, lengths)
  widths = [min(arrays.ids.shape[1], batch_lib.round_up(int(lengths[i].max()), 32)) for i in epoch]
  real = int((arrays.ids[np.concatenate(epoch)] != PAD_ID).sum())  # the same examples in every mode
  stepper = Stepper(cfg)
  sample = {w: {"ids": jnp.asarray(arrays.ids[epoch[0], :w]), "labels": jnp.asarray(arrays.labels[epoch[0]])}
            for w in sorted(set(widths) | {auto_len, arrays.ids.shape[1]})}
  for b in sample.values():  # compile and warm up every width
    stepper.blocking(b)()
  t = rounds_of({w: stepper.blocking(b) for w, b in sample.items()}, rounds)
  modes = {f"fixed L={auto_len} (auto)": [auto_len] * per_epoch,
           f"fixed L={arrays.ids.shape[1]}": [arrays.ids.shape[1]] * per_epoch,
           f"bucketed (window {window})": widths}
  epoch_s = {m: (sum(t[w][0] for w in ws), sum(t[w][1] for w in ws)) for m, ws in modes.items()}
  base = epoch_s[f"fixed L={auto_len} (auto)"][0]
  out = ["Step time per width, ms: " + ", ".join(f"L={w}: {fmt(t[w])}" for w in sample)
         + "; bucketed widths over the epoch: "
         + ", ".join(f"{w}: {widths.count(w)}" for w in sorted(set(widths))),
         "", "| mode | padded tokens/epoch | real share | epoch s | real tokens/s | vs fixed auto |",
         "|---|---|---|---|---|---|"]
  for m, ws in modes.items():
    padded = sum(ws) * cfg.batch_size
    out.append(f"| {m} | {padded:,} | {real / padded:.0%} | {epoch_s[m][0]:.0f} [{epoch_s[m][1]:.0f}] | "
               f"{real / epoch_s[m][0]:,.0f} | {base / epoch_s[m][0]:.2f}x |")
  return out


def host_part(cfg, arrays: batch_lib.Arrays, rounds: int, window: int, steps: int) -> list[str]:
  per_epoch = len(arrays) // cfg.batch_size
  it = batch_lib.train_batches(arrays, cfg.batch_size, cfg.seed, 0, window)
  t = time.perf_counter()
  first = [next(it) for _ in range(per_epoch)]
  host_s = (time.perf_counter() - t) / per_epoch
  stepper = Stepper(cfg)
  on_device = [jax.device_put(b) for _, b in first[:steps]]
  for b in on_device:  # compile every width met in the loop
    stepper.blocking(b)()

  def loop(source):
    def run():
      metrics = None
      for _, b in source():
        metrics = stepper(b)
      jax.block_until_ready(metrics)
    return run

  numpy_src = lambda: zip(range(steps), batch_lib.train_batches(arrays, cfg.batch_size, cfg.seed, 0, window))
  prefetch_src = lambda: zip(range(steps), batch_lib.prefetch(
      batch_lib.train_batches(arrays, cfg.batch_size, cfg.seed, 0, window)))
  device_src = lambda: enumerate(on_device)
  t = rounds_of({"numpy, no prefetch": loop(lambda: ((s, b) for s, (_, b) in numpy_src())),
                 "prefetch (2 ahead)": loop(lambda: ((s, b) for s, (_, b) in prefetch_src())),
                 "already on device": loop(device_src)}, rounds)
  device = t["already on device"][0]
  out = [f"Host batch assembly (gather + trim, bucketed): {host_s * 1e3:.3f} ms/step over an epoch of "
         f"{per_epoch} steps; device step (bucketed mix): {device / steps * 1e3:.1f} ms/step, so assembly is "
         f"{host_s / (device / steps):.2%} of a step.", "",
         f"| feed ({steps} bucketed steps) | ms/step | vs already on device |", "|---|---|---|"]
  for name, v in t.items():
    out.append(f"| {name} | {fmt((v[0] / steps, v[1] / steps))} | {v[0] / device:.3f} |")
  return out


def conv_part(cfg, lengths: list[int], rounds: int) -> list[str]:
  auto = f"auto = {conv.resolve_conv_impl('auto', int(cfg.model.conv_expansion))}"
  others = [i for i in STEP_LOWERINGS if i != "auto"]
  out = ["| L | " + " | ".join(f"{i} step ms" for i in others) + f" | {auto} step ms | "
         + " | ".join(f"{i} / auto" for i in others) + " |", "|---|" + "---|" * (2 * len(others) + 1)]
  for length in lengths:
    steppers = {impl: Stepper(train.get_config(cfg.preset, conv_impl=impl)) for impl in STEP_LOWERINGS}
    b = random_batch(cfg, cfg.batch_size, length)
    for s in steppers.values():
      s.blocking(b)()
    t = rounds_of({impl: s.blocking(b) for impl, s in steppers.items()}, rounds)
    out.append(f"| {length} | " + " | ".join(fmt(t[i]) for i in STEP_LOWERINGS) + " | "
               + " | ".join(f"{t[i][0] / t['auto'][0]:.2f}x" for i in others) + " |")
  out += ["", "Conv alone, forward + backward, batch 32 (ms, median [min]):", "",
          "| K | C | L | " + " | ".join(LOWERINGS) + " | auto picks | "
          + " | ".join(f"{i} / shift_vjp" for i in LOWERINGS if i != "shift_vjp") + " |",
          "|---|---|---|" + "---|" * (2 * len(LOWERINGS))]
  chans = configs.conv_inner(cfg.model)
  for k in sorted({4, 8, 16, cfg.model.conv_kernel}):
    for length in lengths:
      x = jax.random.normal(jax.random.key(0), (cfg.batch_size, length, chans))
      kernel = jax.random.normal(jax.random.key(1), (k, 1, chans))
      bias = jnp.zeros((chans,))
      fns = {}
      for impl in LOWERINGS:
        loss = lambda x, w, b, impl=impl: (conv.causal_depthwise_conv(x, w, b, impl) ** 2).sum()
        g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        jax.block_until_ready(g(x, kernel, bias))
        fns[impl] = lambda g=g: jax.block_until_ready(g(x, kernel, bias))
      t = rounds_of(fns, rounds)
      out.append(f"| {k} | {chans} | {length} | " + " | ".join(fmt(t[i]) for i in LOWERINGS)
                 + f" | {conv.resolve_conv_impl('auto')} | "
                 + " | ".join(f"{t[i][0] / t['shift_vjp'][0]:.2f}x" for i in LOWERINGS if i != "shift_vjp")
                 + " |")
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="embbert")
  parts = ["tokens", "host", "conv"]
  ap.add_argument("--parts", nargs="+", default=parts, choices=parts)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--window", type=int, default=64, help="batches per length-sorted bucketing window")
  ap.add_argument("--loop-steps", type=int, default=16, help="steps of the end-to-end feed loop")
  args = ap.parse_args()
  cfg = train.get_config(args.preset)
  cfg.seq_len = cfg.model.max_len  # encode at the full L; the auto length is a trim of it
  _, _, enc = loop.prepare_task(cfg)
  arrays = enc["train"]
  auto_len = batch_lib.auto_seq_len(arrays.ids, cfg.model.max_len)
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); preset {args.preset}, "
        f"{cfg.task} train {len(arrays):,} examples, batch {cfg.batch_size}, auto length {auto_len}, "
        f"conv auto on this backend; {args.rounds} interleaved rounds, ms as median [min]\n")
  if "tokens" in args.parts:
    print("\n".join(["### Real tokens/s: bucketing vs fixed padding", ""]
                    + tokens_part(cfg, arrays, auto_len, args.rounds, args.window)), "\n", flush=True)
  if "host" in args.parts:
    print("\n".join(["### Host batch assembly vs device step", ""]
                    + host_part(cfg, arrays, args.rounds, args.window, args.loop_steps)), "\n", flush=True)
  if "conv" in args.parts:
    print("\n".join(["### Causal conv lowerings: train step (random ids)", ""]
                    + conv_part(cfg, [auto_len, cfg.model.max_len], args.rounds)), "\n", flush=True)


if __name__ == "__main__":
  main()
