"""The attention's (L x L x d) products alone, against the machine's matmul rate in the same process.

    python benchmarks/attention_matmuls.py                        # B 32, L 256, d 128 (the headline's widest)
    python benchmarks/attention_matmuls.py --length 96 --dim 64

A train step's attention does four batched products per layer and direction: the scores q k^T, the value
product w u, and in the backward pass their two gradients (one contracting the query axis, one the key
axis). Each is timed jitted on random f32 inputs, every variant once per round and the rounds interleaved
(the fastest round kept), so that a slower phase of the machine does not land on one variant. Beside them:
the same scores as a `lax.map` over the batch (one (L x d)(d x L) matmul per example), the scores with d
leading (the layout a transposed operand would give), and the whole batch's queries against its keys as one
flat GEMM (B times the useful work; an upper bound for what a matmul of this aspect ratio reaches here).
GFLOP/s counts the useful 2 B L^2 d multiply-adds (the flat GEMM: all it computes).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from jax import lax

from machine import describe, matmul_gflops, matmul_size


def variants(b: int, l: int, d: int):
  """(name, function, inputs, flops) for each product; inputs are made once, outside the timing."""
  ks = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(ks[0], (b, l, d), jnp.float32)
  u = jax.random.normal(ks[1], (b, l, d), jnp.float32)
  w = jax.random.normal(ks[2], (b, l, l), jnp.float32)
  qt = jnp.swapaxes(q, 1, 2)
  useful = 2 * b * l * l * d
  return [
      ("scores  bqd,bkd->bqk", lambda q, u: jnp.einsum("bqd,bkd->bqk", q, u), (q, u), useful),
      ("values  bqk,bkd->bqd", lambda w, u: jnp.einsum("bqk,bkd->bqd", w, u), (w, u), useful),
      ("grad u  bqk,bqd->bkd", lambda w, q: jnp.einsum("bqk,bqd->bkd", w, q), (w, q), useful),
      ("scores, d leading  bdq,bkd->bqk", lambda qt, u: jnp.einsum("bdq,bkd->bqk", qt, u), (qt, u), useful),
      ("scores as lax.map over b", lambda q, u: lax.map(lambda x: x[0] @ x[1].T, (q, u)), (q, u), useful),
      ("one flat GEMM (bl,d)(d,bl)", lambda q, u: q.reshape(-1, d) @ u.reshape(-1, d).T, (q, u), useful * b),
  ]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--length", type=int, default=256)
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--calls", type=int, default=10, help="calls per variant and round")
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args(argv)
  print(describe())
  rate = matmul_gflops()
  print(f"{matmul_size()}^2 f32 matmul: {rate:.1f} GFLOP/s; B {args.batch}, L {args.length}, d {args.dim}")
  vs = [(name, jax.jit(f), xs, flops) for name, f, xs, flops in variants(args.batch, args.length, args.dim)]
  for _, f, xs, _ in vs:
    f(*xs).block_until_ready()  # compile outside the timing
  best = [float("inf")] * len(vs)
  for _ in range(args.rounds):
    for i, (_, f, xs, _) in enumerate(vs):
      t = time.perf_counter()
      for _ in range(args.calls):
        r = f(*xs)
      r.block_until_ready()
      best[i] = min(best[i], (time.perf_counter() - t) / args.calls)
  print("| product | ms | GFLOP/s | % of matmul |\n|---|---|---|---|")
  for (name, _, _, flops), s in zip(vs, best):
    g = flops / s / 1e9
    print(f"| {name} | {s * 1e3:.2f} | {g:.1f} | {100 * g / rate:.0f} % |")


if __name__ == "__main__":
  main()
