"""Stop requests that cannot be lost: SIGTERM/SIGINT only record the signal (`request`), and the code acts
on it at safe points (`check` raises Preempted): loop.fit at every step, the sweep's report callback and
its worker loop between trials.

A handler that raises runs wherever the main thread happens to be, and an exception raised inside a
garbage-collector callback (JAX registers one) or a __del__ is printed as "Exception ignored" and dropped:
the sweep worker then trained on and exited 0 (1 of 10 SIGTERMs). Setting a flag cannot be dropped.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


class Preempted(BaseException):
  """SIGTERM/SIGINT during a trial: the trial goes back to the queue (BaseException: trainers that catch
  Exception must not swallow it)."""


_requested: int | None = None


def request(signum: int, _frame=None) -> None:
  """The signal handler: remembers the (first) signal; `check` acts on it."""
  global _requested
  if _requested is None:
    _requested = signum


def requested() -> int | None:
  """The signal that asked to stop, or None."""
  return _requested


def check() -> None:
  """A safe point: raises Preempted if a stop was requested."""
  if _requested is not None:
    raise Preempted(f"signal {_requested} ({signal.Signals(_requested).name})")


@contextlib.contextmanager
def deferred(signums=(signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
  """While the block runs, these signals only request a stop; the previous handlers (and no request)
  afterwards. Main thread only (Python's rule for signal handlers)."""
  global _requested
  _requested = None
  before = {s: signal.signal(s, request) for s in signums}
  try:
    yield
  finally:
    for s, handler in before.items():
      signal.signal(s, handler)
    _requested = None
