"""Initial params for a sequence of configs, as a sweep meets them: one jitted program per config (what
`programs.init_members` does) against flax's init run op by op (each op's small program cached by shape,
so later configs reuse the ops of earlier ones).

    python benchmarks/init_eager.py                 # the three modes, each in a fresh process

Each mode runs in its own process, so none finds another's programs. `jit` and `eager` run with JAX's
persistent compilation cache off and keep JAX's in-memory caches; `released` is op by op as a sweep
would run it: JAX's caches cleared after every config (as `programs.release_programs` does between
shapes) and the persistent cache on, in a new folder, for programs of any compile time and size. The time
per config is the wall time from config to host arrays (compile included).
The configs are 12 points of the sweep's 2 MB space in the order a sweep could start them. Also printed:
the largest difference between the two modes' values for the first config (the op-by-op normal draws
are not fused as in the program, so they need not be bit-equal).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from machine import describe

# V, L, d, r, k, N (conv_expansion 1): the sweep's config names' letters.
CONFIGS = [(2048, 64, 32, 16, 8, 1), (2048, 128, 64, 16, 32, 1), (2048, 128, 64, 32, 16, 2),
           (2048, 256, 128, 16, 32, 6), (2048, 64, 64, 16, 32, 1), (2048, 128, 32, 32, 32, 4),
           (2048, 64, 128, 32, 32, 2), (16384, 64, 32, 16, 16, 1), (2048, 64, 32, 16, 8, 2),
           (8192, 128, 32, 32, 32, 1), (2048, 256, 64, 16, 8, 6), (2048, 64, 32, 32, 16, 4)]


def model_configs():
  from embbert_jax import configs
  return [configs.ModelConfig.from_dict(configs.model_config(
      vocab_size=v, max_len=l, hidden=d, embed_dim=r, conv_kernel=k, num_layers=n, conv_expansion=1.0))
      for v, l, d, r, k, n in CONFIGS]


def params(cfg, mode: str):
  """Config `cfg`'s initial params from seed 0: `jit`, the program `programs.init_members` calls; else op by op."""
  import jax
  import numpy as np
  from embbert_jax import models, programs
  if mode == "jit":
    return jax.device_get(programs.init_program(cfg, "classify")(np.int32(0)))
  return jax.device_get(models.init_params(cfg, jax.random.key(0), "classify"))


def run(mode: str) -> None:
  """In this process: each config's initial params in `mode`, one line each, then the total."""
  import tempfile
  import jax
  released = mode == "released"
  if released:
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="init-eager-cache-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  times = []
  for i, cfg in enumerate(model_configs()):
    t = time.perf_counter()
    params(cfg, "eager" if released else mode)
    times.append(time.perf_counter() - t)
    print(f"{mode} {i} {times[-1]:.2f}", flush=True)
    if released:
      jax.clear_caches()
  print(f"{mode} total {sum(times):.1f}", flush=True)


def main() -> None:
  if len(sys.argv) > 1:
    return run(sys.argv[1])
  print(describe())
  rows = {}
  for mode in ("jit", "eager", "released"):
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="true" if mode == "released" else "false")
    out = subprocess.run([sys.executable, __file__, mode], env=env, capture_output=True, text=True, check=True)
    rows[mode] = [line.split()[-1] for line in out.stdout.splitlines() if line.startswith(mode)]
  print("| config | V L d r k N | jit program s | op by op s | op by op, released s |\n|---|---|---|---|---|")
  for i, c in enumerate(CONFIGS):
    print(f"| {i} | {' '.join(map(str, c))} | {rows['jit'][i]} | {rows['eager'][i]} | {rows['released'][i]} |")
  print(f"| all | | {rows['jit'][-1]} | {rows['eager'][-1]} | {rows['released'][-1]} |")
  import jax
  import numpy as np
  cfg = model_configs()[0]
  diff = max(float(np.max(np.abs(a - b))) for a, b in
             zip(jax.tree.leaves(params(cfg, "jit")), jax.tree.leaves(params(cfg, "eager")), strict=True))
  print(f"largest |jit - op by op| over config 0's params: {diff:.2e}")


if __name__ == "__main__":
  main()
