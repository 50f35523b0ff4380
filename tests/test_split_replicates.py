"""benchmarks/split_replicates.py: its interval is over splits, from the rows it reads back (the split files it
writes are replicate.write_split's, tested in test_replicate.py)."""

import math

import numpy as np
import pytest

from benchmark_scripts import load


def test_the_gap_interval_is_over_splits():
  bench = load("split_replicates")
  rows = [dict(acc=[0.70, 0.72], tfidf=0.70), dict(acc=[0.74, 0.74], tfidf=0.72), dict(acc=[0.70, 0.70], tfidf=0.71)]
  s = bench.summarize(rows)
  gaps = np.array([0.01, 0.02, -0.01])
  half = 4.302653 * gaps.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
  assert s["mean"] == pytest.approx(gaps.mean()) and s["wins"] == 2 and s["splits"] == 3
  assert (s["low"], s["high"]) == pytest.approx((gaps.mean() - half, gaps.mean() + half), rel=1e-5)
  assert math.isnan(bench.summarize(rows[:1])["low"])
