"""Our jitted train step side by side with a PyTorch EmbBERT step trained the way the authors train it.

    python benchmarks/torch_step.py                                  # embbert and nano at L = 96 and 256
    python benchmarks/torch_step.py --presets embbert --lengths 96 --rounds 5

The PyTorch side is `TorchEmbBert` below: EmbBERT written in plain PyTorch from the spec
(../shared/design/embbert.md, section 1), module for module as the authors' code builds it (Nano Embedder,
RMSNorm, single-head efficient attention with keys = values = the normed input, a grouped causal Conv1d,
the weighted difference, a position-0 classifier), trained as their loop does: AdamW (0.9, 0.999, 1e-8,
weight decay 0.05), grad-norm clip 1.0, `loss.item()` after every step, `torch.set_num_threads(cores)`.
Before timing, it loads our Flax parameters and the script checks that both compute the same logits
(printed as the max abs difference), so the two steps do the same arithmetic.

Both steps see the same random batch (batch 32, ids without padding, length L). Rounds are interleaved
(ours, torch, ours, torch, ...) so that load from other processes hits both alike; the best round of each
is kept. A 2048^2 f32 matmul timed in the same process gives the machine's rate; each step's FLOPs come
from XLA's cost analysis of our program (the same model), so "% of matmul" is achieved FLOP/s over that
rate. torch is an optional dependency: without it the script prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from embbert_jax import configs, train
from machine import cores, describe, matmul_gflops
from train_throughput import make_step, random_batch, step_flops

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # the optional extra
  torch = None


if torch is not None:

  class TorchEmbBert(torch.nn.Module):
    """EmbBERT classifier in PyTorch: the spec's modules, parameters named after ours."""

    def __init__(self, m):
      super().__init__()
      self.m = m
      d, r, di = m.hidden, m.embed_dim, configs.conv_inner(m)
      self.token = torch.nn.Embedding(m.vocab_size, r, padding_idx=0)
      self.position = torch.nn.Embedding(m.max_len, r)
      self.segment = torch.nn.Embedding(3, d)
      self.token_proj = torch.nn.Linear(r, d, bias=False)
      self.position_proj = torch.nn.Linear(r, d, bias=False)
      self.layers = torch.nn.ModuleList()
      for _ in range(m.num_layers):
        layer = torch.nn.Module()
        layer.norm = torch.nn.RMSNorm(d, eps=m.norm_eps)
        layer.q = torch.nn.Linear(d, d)
        layer.out = torch.nn.Linear(d, d)
        layer.conv = torch.nn.Conv1d(d, di, m.conv_kernel, groups=d, padding=m.conv_kernel - 1)
        layer.proj = torch.nn.Linear(di, d)
        layer.lam = torch.nn.Parameter(0.1 * torch.randn(4, d))
        self.layers.append(layer)
      self.head = torch.nn.Linear(d, m.num_labels)
      self.drop = torch.nn.Dropout(m.dropout)

    def forward(self, ids):
      length = ids.shape[1]
      mask = ids != 0
      seg = torch.where(torch.cumsum((ids == 4).int(), -1) > 0, 2, 1).masked_fill(~mask, 0)
      x = (self.token_proj(self.token(ids)) + self.position_proj(self.position.weight[:length])[None]
           + self.segment(seg))
      for layer in self.layers:
        u = layer.norm(x)
        scores = layer.q(u) @ u.transpose(1, 2) / self.m.hidden ** 0.5
        p = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), -1)
        p = self.drop(torch.nan_to_num(p) * mask[:, :, None])
        a = layer.out(p @ u)
        c = layer.conv(u.transpose(1, 2))[..., :length].transpose(1, 2)
        s = layer.proj(F.silu(c))
        lam1 = torch.exp(layer.lam[0] @ layer.lam[1])
        lam2 = torch.exp(layer.lam[2] @ layer.lam[3])
        x = lam1 * a - lam2 * s
      return self.head(x[:, 0])

    @torch.no_grad()
    def load_flax(self, params) -> None:
      """Copies our Flax parameters in (Dense kernels transposed, the conv kernel to (out, 1, K))."""
      t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
      emb = params["encoder"]["embedder"]
      self.token.weight.copy_(t(emb["token"]["embedding"]))
      self.position.weight.copy_(t(emb["position"]["embedding"]))
      self.segment.weight.copy_(t(emb["segment"]["embedding"]))
      self.token_proj.weight.copy_(t(emb["token_proj"]["kernel"]).T)
      self.position_proj.weight.copy_(t(emb["position_proj"]["kernel"]).T)
      dense = lambda mod, p: (mod.weight.copy_(t(p["kernel"]).T), mod.bias.copy_(t(p["bias"])))
      for i, layer in enumerate(self.layers):
        p = params["encoder"][f"layer_{i}"]
        layer.norm.weight.copy_(t(p["norm"]["scale"]))
        dense(layer.q, p["attention"]["q"])
        dense(layer.out, p["attention"]["out"])
        layer.conv.weight.copy_(t(p["conv_branch"]["conv"]["kernel"]).permute(2, 1, 0))
        layer.conv.bias.copy_(t(p["conv_branch"]["conv"]["bias"]))
        dense(layer.proj, p["conv_branch"]["proj"])
        layer.lam.copy_(torch.stack([t(p["aggregate"][n]) for n in
                                     ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")]))
      dense(self.head, params["head"]["dense"])


def torch_stepper(model, batch):
  """The authors' loop body: forward, CE, backward, clip 1.0, AdamW step, loss.item()."""
  opt = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
  ids = torch.from_numpy(np.array(batch["ids"])).long()
  labels = torch.from_numpy(np.array(batch["labels"])).long()
  model.train()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(ids), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()
  return step


def parity(cfg, params, batch) -> float:
  """max |logits_torch - logits_jax| on the batch, eval mode (no dropout), same weights."""
  from embbert_jax import models
  model = TorchEmbBert(cfg.model)
  model.load_flax(params)
  model.eval()
  with torch.no_grad():
    ours = np.asarray(models.build_model(cfg.model).apply({"params": params}, batch["ids"]))
    theirs = model(torch.from_numpy(np.array(batch["ids"])).long()).numpy()
  return float(np.max(np.abs(ours - theirs)))


def time_rounds(fns: dict, steps: int, rounds: int) -> dict[str, float]:
  """Best seconds per step of each fn over `rounds` interleaved rounds of `steps` calls."""
  best = {k: float("inf") for k in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      fn()  # not timed: the first call of a round pays any cache refill
      t = time.perf_counter()
      for _ in range(steps):
        fn()
      best[name] = min(best[name], (time.perf_counter() - t) / steps)
  return best


def bench(preset: str, length: int, batch: int, steps: int, rounds: int) -> dict:
  cfg = train.get_config(preset)
  b = random_batch(cfg, batch, length)
  jstep, state = make_step(cfg)
  params = jax.tree.map(np.asarray, state["params"])
  compiled = jstep.lower(state, b, jax.random.key(0)).compile()
  flops = step_flops(compiled)
  box = {"state": state, "i": 0}

  def ours():
    box["i"] += 1
    box["state"], m = compiled(box["state"], b, jax.random.key(box["i"]))
    return float(m["loss"])  # the host sync the authors' loop has too

  tmodel = TorchEmbBert(cfg.model)
  tmodel.load_flax(params)
  diff = parity(cfg, params, b)
  best = time_rounds({"ours": ours, "torch": torch_stepper(tmodel, b)}, steps, rounds)
  return {"preset": preset, "L": length, "ours": 1 / best["ours"], "torch": 1 / best["torch"],
          "gflops": flops / best["ours"] / 1e9, "parity": diff}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--presets", nargs="+", default=["embbert", "nano"])
  ap.add_argument("--lengths", nargs="+", type=int, default=[96, 256])
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--rounds", type=int, default=3)
  args = ap.parse_args()
  if torch is None:
    print("torch is not installed (pip install torch): nothing to compare against")
    return
  ncores = cores()
  torch.set_num_threads(ncores)
  peak = matmul_gflops(2048)
  load = os.getloadavg()[0]
  print(f"{describe()}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); 2048^2 f32 matmul in this run: {peak:.1f} GFLOP/s; load {load:.1f}")
  if load > 0.5 * ncores:
    print(f"WARNING: load average {load:.1f} on {ncores} cores: other processes share them, and torch's OpenMP "
          "threads then wait a scheduler slice per op (about 15 ms each here), so the torch column and the "
          "matmul rate are not this machine's; rerun on a quiet machine")
  print("| preset | L | torch steps/s | ours steps/s | ours / torch | ours % of matmul | max logit diff |")
  print("|---|---|---|---|---|---|---|")
  for p in args.presets:
    for length in args.lengths:
      r = bench(p, length, args.batch, args.steps, args.rounds)
      print(f"| {p} | {r['L']} | {r['torch']:.2f} | {r['ours']:.2f} | {r['ours'] / r['torch']:.2f}x | "
            f"{100 * r['gflops'] / peak:.0f} % | {r['parity']:.1e} |", flush=True)


if __name__ == "__main__":
  main()
