"""Shared pytest settings: offline wandb, fast compiles, numerics that catch silent broadcasting bugs.

Opt-in markers (deselected by setup.cfg's addopts): `-m network` fetches real data, `-m slow` runs the
longer end-to-end checks.
"""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tests compile many tiny programs: XLA's backend optimisations cost more than they save here (3x faster
# compiles on CPU, same numerics up to float rounding).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
  config.addinivalue_line("markers", "network: fetches real data from the package registries (opt-in)")
  config.addinivalue_line("markers", "slow: longer end-to-end checks (opt-in: -m slow)")
