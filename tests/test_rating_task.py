"""benchmarks/rating_task.py: ratings cut into ordered classes (a rating on a cut goes below it, as the binary
tasks count 0 as negative), sets pooled, and an 80/10/10 split column."""

import numpy as np

from benchmark_scripts import load
from embbert_jax.data import tasks

RATINGS = {"amazonReviewSnippets_GroundTruth.txt": [-2.0, -0.5, -0.4, 0.0, 0.5, 0.6, 3.1, 1.0, -1.0, 0.2],
           "nytEditorialSnippets_GroundTruth.txt": [0.5, -0.5, 2.0, -3.0, 0.1, 0.7, -0.6, 0.4, 0.0, 1.5]}


def test_ratings_are_cut_into_three_classes_and_split(monkeypatch):
  bench = load("rating_task")
  monkeypatch.setattr(tasks, "ensure_archive", lambda source, cache_dir=None: "archive")
  monkeypatch.setattr(tasks, "_read_vader_snippets",
                      lambda archive, member: ([f"{member} {i}" for i in range(10)], np.array(RATINGS[member])))
  rows = bench.rows_of(["amazon", "nyt"], [-0.5, 0.5], seed=0)
  got = {r["text"]: r["label"] for r in rows}
  want = {-2.0: "negative", -0.5: "negative", -0.4: "neutral", 0.0: "neutral", 0.5: "neutral", 0.6: "positive"}
  for member, ratings in RATINGS.items():
    for i, x in enumerate(ratings):
      if x in want:
        assert got[f"{member} {i}"] == want[x], (member, x)
  assert len(rows) == 20 and [sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")] == [16, 2, 2]
  assert [r["text"] for r in rows] != [f"{m} {i}" for m in RATINGS for i in range(10)]  # pooled, then shuffled


def test_source_labels_name_the_set_and_max_rows_cuts_the_shuffled_pool_before_the_split(monkeypatch):
  bench = load("rating_task")
  monkeypatch.setattr(tasks, "ensure_archive", lambda source, cache_dir=None: "archive")
  monkeypatch.setattr(tasks, "_read_vader_snippets",
                      lambda archive, member: ([f"{member} {i}" for i in range(10)], np.array(RATINGS[member])))
  rows = bench.rows_of(["amazon", "nyt"], [-0.5, 0.5], seed=0, label="source")
  assert all(r["label"] == ("amazon" if r["text"].startswith("amazon") else "nyt") for r in rows)
  cut = bench.rows_of(["amazon", "nyt"], [-0.5, 0.5], seed=0, label="source", max_rows=10)
  assert [r["text"] for r in cut] == [r["text"] for r in rows[:10]]  # the same shuffle, its first rows
  assert [sum(r["split"] == s for r in cut) for s in ("train", "validation", "test")] == [8, 1, 1]
