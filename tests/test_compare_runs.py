"""benchmarks/compare_runs.py: the seed-level Welch interval the README's init comparisons quote."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")


def _bench():
  spec = importlib.util.spec_from_file_location(
      "compare_runs", Path(__file__).parents[1] / "benchmarks" / "compare_runs.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_welch_interval_is_scipys():
  a, b = np.array([0.6245, 0.6396, 0.5934]), np.array([0.70, 0.66, 0.69, 0.71])
  diff, lo, hi = _bench().welch(a, b)
  ci = scipy_stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
  assert diff == pytest.approx(b.mean() - a.mean())
  assert (lo, hi) == pytest.approx((ci.low, ci.high))


def _run(root: Path, task: str, accs):
  for i, acc in enumerate(accs):
    d = root / f"seed_{i}" / "finetune"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"test": {"accuracy": acc, "mcc": acc - 0.5}, "recipe": "spec",
                                               "init": {"kind": "scratch"}}))
    (d / "config.json").write_text(json.dumps({"task": task}))
  return str(root)


def test_runs_of_different_tasks_are_refused(tmp_path, monkeypatch, capsys):
  bench = _bench()
  a, b = _run(tmp_path / "a", "tweets", [0.7, 0.71, 0.69]), _run(tmp_path / "b", "tweets", [0.6, 0.62, 0.61])
  monkeypatch.setattr("sys.argv", ["compare_runs", a, b, "--metric", "accuracy"])
  bench.main()
  out = capsys.readouterr().out
  assert "task tweets" in out and "-0.0900 [" in out
  c = _run(tmp_path / "c", "sms_spam", [0.9, 0.91, 0.92])
  monkeypatch.setattr("sys.argv", ["compare_runs", a, c])
  with pytest.raises(SystemExit, match="different tasks"):
    bench.main()
