"""benchmarks/step_profile.py: the per-op table the README's Performance section quotes."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def _bench():
  sys.path.insert(0, str(BENCH))  # it imports train_throughput beside it, as when run as a script
  try:
    spec = importlib.util.spec_from_file_location("step_profile", BENCH / "step_profile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
  finally:
    sys.path.remove(str(BENCH))


def test_op_table_names_real_ops_of_the_compiled_step():
  bench = _bench()
  compiled, args = bench.compiled_step("nano", 16, 2)
  rows = bench.op_table(compiled, args, steps=2, top=5)
  body = [r for r in rows if r.startswith("| ") and not r.startswith("| ms")]
  assert len(body) == 5
  hlo = compiled.as_text()
  for row in body:
    ms, share, name, shape, _ = [c.strip() for c in row.strip("|").split("|")]
    assert float(ms) >= 0 and share.endswith("%")
    assert f"{name} = " in hlo and shape != "?", row  # every timed op is found in the compiled HLO
  assert "share" in rows[2]
