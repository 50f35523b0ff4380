"""The host process's memory: what it holds now, its peak, and handing freed heap back to the OS.

A sweep worker trains one shape after another; XLA:CPU allocates its buffers with the C library's malloc,
and glibc keeps freed chunks in its arenas, so a worker's resident memory used to follow its largest shapes
and never come down (README, Memory over a long sweep: about 1 GB of a 1.5 GB worker was free heap after a
program flush). `trim_heap` (glibc's malloc_trim) returns it; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import sys


def rss_mb() -> float:
  """Resident memory of this process now, in MiB (Linux /proc; NaN elsewhere)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return float("nan")


def peak_rss_mb() -> float:
  """The most resident memory this process has held, in MiB (getrusage: KiB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@functools.lru_cache(maxsize=1)
def _libc():
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return libc if hasattr(libc, "malloc_trim") else None
  except OSError:
    return None


class _MallInfo2(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_free_mb() -> float:
  """MiB glibc's malloc holds free in its arenas (mallinfo2's fordblks): freed, still counted as resident
  until trimmed; NaN without glibc 2.33+."""
  libc = _libc()
  if libc is None or not hasattr(libc, "mallinfo2"):
    return float("nan")
  libc.mallinfo2.restype = _MallInfo2
  return libc.mallinfo2().fordblks / 2**20


def trim_heap() -> bool:
  """Hands the C heap's free memory back to the OS (glibc malloc_trim(0)); False where there is none."""
  libc = _libc()
  if libc is None:
    return False
  libc.malloc_trim(0)
  return True
