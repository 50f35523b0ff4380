"""What a benchmark ran on, and the machine's matmul rate measured in the same process: one home for both,
so that every benchmark's header names the same facts (issue 18: the CPU model and core count, the JAX
backend and devices) and every "% of matmul" divides by a rate measured the same way.

    from machine import describe, matmul_gflops
    print(describe())                # Intel(R) Xeon(R) Processor, 2 cores; jax 0.10.2, backend cpu: 1 x cpu
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp


def cpu_model() -> str:
  """The host CPU's model name (/proc/cpuinfo on Linux; the platform's name elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def cores() -> int:
  """CPU cores this process may run on (its affinity mask, which a container or taskset narrows)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def describe() -> str:
  """One line: host CPU and cores, jax version and backend, the devices it computes on."""
  devs = jax.devices()
  return (f"{cpu_model()}, {cores()} cores; jax {jax.__version__}, backend {jax.default_backend()}: "
          f"{len(devs)} x {devs[0].device_kind}")


def matmul_size() -> int:
  """The square matmul a rate is measured on: 2048 on a CPU (a fraction of a second), 8192 on an
  accelerator (2048^2 is microseconds there, dominated by the launch)."""
  return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_gflops(n: int | None = None, reps: int = 5) -> float:
  """Achieved f32 GFLOP/s of an n x n matmul at JAX's default precision (the precision the models
  run at): `reps` calls timed together after a warm-up call."""
  n = n or matmul_size()
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9
