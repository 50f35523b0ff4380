"""benchmarks/compare_runs.py: the seed-level Welch interval the README's init comparisons quote."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark_scripts import load

scipy_stats = pytest.importorskip("scipy.stats")


def _bench():
  return load("compare_runs")


def test_welch_interval_is_scipys():
  a, b = np.array([0.6245, 0.6396, 0.5934]), np.array([0.70, 0.66, 0.69, 0.71])
  diff, lo, hi = _bench().welch(a, b)
  ci = scipy_stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
  assert diff == pytest.approx(b.mean() - a.mean())
  assert (lo, hi) == pytest.approx((ci.low, ci.high))


def test_the_interval_over_tasks_is_welchs_for_one_and_pools_the_seeds_of_several(tmp_path, monkeypatch, capsys):
  bench = _bench()
  a, b = np.array([0.6245, 0.6396, 0.5934]), np.array([0.70, 0.66, 0.69, 0.71])
  assert bench.pooled_welch([(a, b)]) == pytest.approx(bench.welch(a, b))
  # Two tasks with equal variances and n: the average difference, its sd sqrt(2 * 2 var/n) / 2, df 4(n-1).
  x, y = np.array([0.60, 0.62, 0.64]), np.array([0.70, 0.72, 0.74])
  diff, lo, hi = bench.pooled_welch([(x, y), (x + 0.1, y + 0.3)])
  half = scipy_stats.t.ppf(0.975, 8) * np.sqrt(4 * x.var(ddof=1) / 3) / 2
  assert diff == pytest.approx(0.2) and (lo, hi) == pytest.approx((0.2 - half, 0.2 + half))
  # --study: every task that has each arm, per task and over tasks.
  for task, shift in (("rt_polarity", 0.0), ("tweets", 0.1)):
    _run(tmp_path / "runs" / task / "ref", task, list(x + shift))
    _run(tmp_path / "runs" / task / "arm", task, list(y + shift))
  (tmp_path / "runs" / "sms_spam" / "ref").mkdir(parents=True)  # an arm missing: the task is left out
  # An arm another study reused (experiment --reuse) holds only arm_result.json, naming the run it copied.
  moved = tmp_path / "elsewhere" / "tweets" / "arm"
  moved.parent.mkdir(parents=True)
  (tmp_path / "runs" / "tweets" / "arm").rename(moved)
  (tmp_path / "runs" / "tweets" / "arm").mkdir()
  (tmp_path / "runs" / "tweets" / "arm" / "arm_result.json").write_text(json.dumps({"reused_from": str(moved)}))
  monkeypatch.setattr("sys.argv", ["compare_runs", "--study", str(tmp_path), "--arms", "ref", "arm",
                                   "--metric", "accuracy"])
  bench.main()
  out = capsys.readouterr().out
  assert "| arm | rt_polarity | tweets | vs ref" in out and "sms_spam" not in out
  assert f"| arm | 72.0 +- {100 * y.std():.1f} (+10.0 [" in out and "| +10.0 [" in out


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


def test_quantization_paired_interval_is_scipys_and_reads_the_runs_task(tmp_path):
  spec = importlib.util.spec_from_file_location(
      "quantization", Path(__file__).parents[1] / "experiments" / "quantization.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  d = [-0.4, 0.1, -1.2, 0.3]
  ci = scipy_stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
  assert mod.paired_interval(d) == f"{np.mean(d):+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] over 4 models"
  assert "no interval" in mod.paired_interval([0.5])
  (tmp_path / "finetune" / "model").mkdir(parents=True)
  (tmp_path / "finetune" / "config.json").write_text(json.dumps({"task": "tweets"}))
  assert mod.run_task(str(tmp_path / "finetune" / "model"), "rt_polarity") == "tweets"
  assert mod.run_task(str(tmp_path / "elsewhere" / "model"), "rt_polarity") == "rt_polarity"
