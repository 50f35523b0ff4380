"""Compiling ahead in a sweep (`--compile-ahead`): while a worker trains a trial, a thread compiles the
programs of the config the scheduler will start next (the trainer plug-in's `precompile`, precompile.py),
and the trial, when it starts, loads them from JAX's persistent compilation cache.

Measured (README, Compile time; benchmarks/compile_ahead.py): a precompiled trial's compile + initial
params fell from 27.1 + 7.5 s to 6.9 + 1.3 s, but on a 2-core CPU an XLA compile keeps 1.5 cores busy
and a step beside it runs at 0.43-0.50x, and a 45-minute sweep trained no more configs per minute. So
`auto` compiles ahead only where an accelerator trains and the host's cores sit idle.
"""

from __future__ import annotations

import sys
import threading
import time

from optuna.trial import FrozenTrial

from embbert_jax import ledger as ledger_lib
from embbert_jax import scheduler
from embbert_jax.engine import Sweep, one_line, trainer_config


class CompileAhead:
  """One worker's compiling thread: the config scheduler.next_start names, one config at a time, each
  config once; what it compiled and how long the worker waited for it go to the study (frontier.md)."""

  def __init__(self, sw: Sweep, led: ledger_lib.Ledger):
    self.sw, self.led = sw, led
    self.thread: threading.Thread | None = None
    self.compiling = ""  # the hash of the config in flight
    self.tried: set[str] = set()
    self.compiled, self.seconds, self.waited = 0, 0.0, 0.0
    mode = sw.settings.get("compile_ahead", "auto")
    self.on = (mode == "on" or (mode == "auto" and _accelerator())) and sw.asha is not None and callable(
        getattr(sw.trainer, "precompile", None))

  def wait_for(self, trials: list[FrozenTrial]) -> None:
    """Before training `trials`: if their config is the one compiling, its compile finishes first
    (compiling it a second time on the main thread would only compete with it)."""
    if self.thread is not None and self.thread.is_alive() and any(
        t.user_attrs.get("shape") == self.compiling for t in trials):
      t0 = time.perf_counter()
      self.thread.join()
      self.waited += time.perf_counter() - t0

  def start(self) -> None:
    if not self.on or (self.thread is not None and self.thread.is_alive()):
      return
    cand = scheduler.next_start(self.sw, self.led, self.sw.asha)
    if cand is None or cand.hash in self.tried:
      return
    self.tried.add(cand.hash)
    self.compiling = cand.hash
    cfg = scheduler.with_rung(self.sw, trainer_config(self.sw, cand.model, 0, cand.hash, {}), 0)
    self.thread = threading.Thread(target=self._run, args=(cand, cfg), name="compile-ahead", daemon=True)
    self.thread.start()

  def _run(self, cand, cfg) -> None:
    try:
      out = self.sw.trainer.precompile(cfg)
      self.compiled += int(out.get("programs", 0))
      self.seconds += float(out.get("seconds", 0.0))
    except Exception as e:  # only time is lost: the trial compiles what it needs when it starts
      self.sw.log(f"compiling {cand.describe()} ahead failed ({one_line(e)}); its trial will compile itself")

  def close(self) -> None:
    """Waits for a compile in flight (a process that exits under a compiling thread can crash); records
    what this worker compiled ahead in the study (frontier.md's time line sums the workers)."""
    if self.thread is not None:
      self.thread.join()
    if self.compiled:
      self.sw.log(f"compiled ahead on a second thread: {self.compiled} programs of {len(self.tried)} "
                  f"configs in {self.seconds:.0f} s")
      self.led.set_study_attr(ledger_lib.COMPILE_AHEAD + self.led.worker, {
          "programs": self.compiled, "configs": len(self.tried), "seconds": self.seconds,
          "waited": self.waited})


def _accelerator() -> bool:
  """Whether the trainer's JAX trains on an accelerator (its host's cores then sit idle while it steps)."""
  if "jax" not in sys.modules:
    return False
  import jax
  return jax.default_backend() != "cpu"
