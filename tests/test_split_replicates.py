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


def test_the_paired_difference_is_split_by_split_over_the_splits_both_runs_have():
  bench = load("split_replicates")
  base = [dict(split=0, acc=[0.70, 0.72]), dict(split=1, acc=[0.60]), dict(split=2, acc=[0.80])]
  rows = [dict(split=0, acc=[0.72, 0.74]), dict(split=1, acc=[0.60, 0.62]), dict(split=3, acc=[0.99])]
  d = bench.paired(rows, base)
  diffs = np.array([0.02, 0.01])  # split 0: 0.73 - 0.71; split 1: 0.61 - 0.60; splits 2 and 3: one run only
  half = 12.7062 * diffs.std(ddof=1) / math.sqrt(2)  # t(0.975, 1)
  assert d["splits"] == 2 and d["wins"] == 2 and d["mean"] == pytest.approx(diffs.mean())
  assert (d["low"], d["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half), rel=1e-4)
  assert bench.paired(rows[:1], base) is None
