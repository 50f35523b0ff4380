"""Loads a script of benchmarks/ as a module, the way it runs as a script: with benchmarks/ on sys.path
while it imports, so its `from train_throughput import ...` finds its neighbours."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def load(name: str):
  sys.path.insert(0, str(BENCH))
  try:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
  finally:
    sys.path.remove(str(BENCH))
