"""benchmarks/step_profile.py: the per-op table the README's Performance section quotes."""

import pytest

from benchmark_scripts import load


def _bench():
  return load("step_profile")


def test_op_table_names_real_ops_of_the_compiled_step():
  bench = _bench()
  compiled, args = bench.compiled_step("nano", 16, 2)
  rows = bench.op_table(compiled, args, steps=2, top=5)
  body, parts = rows[4:9], rows[12:]
  assert rows[9] == "" and all(r.startswith("| ") for r in body + parts)
  hlo = compiled.as_text()
  for row in body:
    ms, share, name, shape, _ = [c.strip() for c in row.strip("|").split("|")]
    assert float(ms) >= 0 and share.endswith("%")
    assert f"{name} = " in hlo and shape != "?", row  # every timed op is found in the compiled HLO
  assert "share" in rows[2]
  # The per-part table covers every op: its shares add up to the whole.
  shares = [float(r.strip("|").split("|")[2].strip().rstrip("%")) for r in parts]
  assert sum(shares) == pytest.approx(100, abs=0.5) and any("attention" in r for r in parts), parts
