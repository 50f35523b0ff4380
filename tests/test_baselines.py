"""Reference baselines (majority class, TF-IDF + logistic regression) on tiny fixtures, their cache, and
where they show up: the sweep's frontier table and plot lines."""

import json

import numpy as np
import pytest

from embbert_jax import baselines, data, pareto

# Each class has its own words: a linear model on word counts separates them exactly.
POS, NEG = "bright sunny warm lovely".split(), "dark rainy cold awful".split()


def write_task(path, n_pos=(14, 3, 3), n_neg=(6, 2, 3)):
  """A local task with a split column: per split, n_pos positive and n_neg negative rows."""
  rng = np.random.RandomState(0)
  rows = []
  for split, p, q in zip(("train", "validation", "test"), n_pos, n_neg):
    for label, words, n in ((1, POS, p), (0, NEG, q)):
      for _ in range(n):
        rows.append({"text": " ".join(rng.choice(words, 4)), "label": label, "split": split})
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_majority_class_scores_its_share_and_zero_mcc(tmp_path):
  task = data.load_task(write_task(tmp_path / "t.jsonl"))
  got = baselines.majority(task)
  assert got["test"]["accuracy"] == pytest.approx(3 / 6)  # train majority is positive; test has 3 of 6
  assert got["validation"]["accuracy"] == pytest.approx(3 / 5)
  assert got["test"]["mcc"] == 0.0 and got["test"]["macro_f1"] == pytest.approx(0.5 * (2 * 3 / 9))


def test_tfidf_separates_a_separable_task_and_is_cached(tmp_path, monkeypatch):
  pytest.importorskip("sklearn", reason="scikit-learn (the baselines extra) is not installed")
  task = data.load_task(write_task(tmp_path / "t.jsonl"))
  out = baselines.compute(task, tmp_path / "cache")
  lin = out["baselines"][baselines.TFIDF]
  assert lin["test"] == {"accuracy": 1.0, "mcc": 1.0, "macro_f1": 1.0} and lin["validation"]["accuracy"] == 1.0
  assert out["note"] == "" and set(out["baselines"]) == {baselines.MAJORITY, baselines.TFIDF}
  [cached] = (tmp_path / "cache" / "baselines").iterdir()
  monkeypatch.setattr(baselines, "tfidf_linear", lambda t: pytest.fail("the cache was not used"))
  assert baselines.compute(task, tmp_path / "cache") == out
  # Other split contents: another key, so an edited file is never scored from a stale entry.
  other = data.load_task(write_task(tmp_path / "t.jsonl", n_pos=(5, 3, 3), n_neg=(15, 2, 3)))
  assert baselines.split_digest(other) != baselines.split_digest(task)


def test_without_sklearn_the_linear_baseline_is_skipped_with_a_note(tmp_path, monkeypatch):
  monkeypatch.setattr(baselines, "sklearn_version", lambda: None)
  out = baselines.compute(data.load_task(write_task(tmp_path / "t.jsonl")), tmp_path / "cache")
  assert set(out["baselines"]) == {baselines.MAJORITY}
  assert "scikit-learn is not installed" in out["note"] and "\n" not in out["note"]
  assert baselines.format_lines(out)[-1] == out["note"]


def test_frontier_table_and_plot_carry_the_references(tmp_path, monkeypatch):
  pytest.importorskip("sklearn", reason="scikit-learn (the baselines extra) is not installed")
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
  task = write_task(tmp_path / "t.jsonl")
  settings = {"study": "s", "metric": "mcc", "task": str(task)}
  table = pareto.format_table([], [], settings)
  ref_rows = [l for l in table.splitlines() if l.startswith("| reference")]
  assert len(ref_rows) == 2 and baselines.TFIDF in ref_rows[1]
  assert ref_rows[1].split(" | ")[3:6] == ["1.0000", "1.0000", "1.0000"]  # val mcc, test mcc, test acc
  assert ref_rows[0].split(" | ")[3:6] == ["0.0000", "0.0000", "0.5000"]
  assert pareto.reference_lines(settings) == [(baselines.MAJORITY, 0.0), (baselines.TFIDF, 1.0)]
  # An unreadable task gives a note, never a failed summary.
  missing = pareto.format_table([], [], {**settings, "task": str(tmp_path / "gone.jsonl")})
  assert "reference baselines unavailable" in missing and "| reference" not in missing
