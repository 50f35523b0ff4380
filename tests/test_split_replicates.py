"""benchmarks/split_replicates.py: the split it writes is the split the trainer reads, and its interval."""

import json
import math

import numpy as np
import pytest

from benchmark_scripts import load
from embbert_jax import data


def test_a_written_split_reads_back_as_the_same_split(tmp_path):
  bench = load("split_replicates")
  pool = tmp_path / "pool.jsonl"
  rows = [{"text": f"review number {i} {'good' if i % 3 else 'bad'}", "label": "pos" if i % 3 else "neg"}
          for i in range(60)]
  pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
  for seed in (0, 1):
    want = bench.write_split(str(pool), seed, tmp_path / f"split{seed}.jsonl")
    got = data.load_task(str(tmp_path / f"split{seed}.jsonl"))
    assert got.label_names == want.label_names
    for name in ("train", "validation", "test"):
      assert got.splits[name].text == want.splits[name].text
      assert np.array_equal(got.splits[name].label, want.splits[name].label)
  # split 1 is another draw of the same pool, not the canonical one
  assert data.load_task(str(pool), seed=1).test.text != data.load_task(str(pool)).test.text


def test_the_gap_interval_is_over_splits():
  bench = load("split_replicates")
  rows = [dict(acc=[0.70, 0.72], tfidf=0.70), dict(acc=[0.74, 0.74], tfidf=0.72), dict(acc=[0.70, 0.70], tfidf=0.71)]
  s = bench.summarize(rows)
  gaps = np.array([0.01, 0.02, -0.01])
  half = 4.302653 * gaps.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
  assert s["mean"] == pytest.approx(gaps.mean()) and s["wins"] == 2 and s["splits"] == 3
  assert (s["low"], s["high"]) == pytest.approx((gaps.mean() - half, gaps.mean() + half), rel=1e-5)
  assert math.isnan(bench.summarize(rows[:1])["low"])
