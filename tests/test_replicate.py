"""python -m embbert_jax.replicate: the splits it writes are the splits the trainer reads, a given split is
replicated by pooling, the gap interval is over splits, and a sweep folder's points retrain and read back."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embbert_jax import data, loop, replicate
from test_train import tiny_config


def _pool(path, n=60, split=False):
  rows = [{"text": f"review number {i} {'good' if i % 3 else 'bad'}", "label": "pos" if i % 3 else "neg"}
          for i in range(n)]
  if split:
    for i, r in enumerate(rows):
      r["split"] = "test" if i % 5 == 0 else "validation" if i % 5 == 1 else "train"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_a_written_split_reads_back_as_the_same_split(tmp_path):
  pool = _pool(tmp_path / "pool.jsonl")
  for seed in (0, 1):
    want = replicate.write_split(str(pool), seed, tmp_path / f"split{seed}.jsonl")
    got = data.load_task(str(tmp_path / f"split{seed}.jsonl"))
    assert got.label_names == want.label_names
    for name in ("train", "validation", "test"):
      assert got.splits[name].text == want.splits[name].text
      assert np.array_equal(got.splits[name].label, want.splits[name].label)
  # split 1 is another draw of the same pool, not the canonical one
  assert data.load_task(str(pool), seed=1).test.text != data.load_task(str(pool)).test.text


def test_given_splits_are_replicated_by_pooling_in_the_same_fractions(tmp_path):
  """A file with a split column: split 0 is the file's own, split k > 0 the pooled examples split again
  (before, every seed returned the given split, so replicates of such a task were one split repeated)."""
  pool = _pool(tmp_path / "given.jsonl", n=100, split=True)
  given, other = data.load_task(str(pool)), data.load_task(str(pool), seed=1)
  assert [len(given.splits[s]) for s in data.SPLITS] == [60, 20, 20]
  assert given.test.text == [f"review number {i} {'good' if i % 3 else 'bad'}" for i in range(0, 100, 5)]
  assert other.test.text != given.test.text
  assert sorted(t for s in data.SPLITS for t in other.splits[s].text) == sorted(
      t for s in data.SPLITS for t in given.splits[s].text)
  assert abs(len(other.test) - 20) <= 2 and abs(len(other.validation) - 20) <= 2  # per-class rounding
  assert set(np.unique(other.test.label)) == {0, 1}  # stratified: both classes held out


def test_the_frontier_over_splits_drops_a_point_a_smaller_one_matches():
  """The sweep's order came from one split: over splits a bigger point that is no better leaves the front."""
  row = lambda acc, tfidf=0.7: dict(split=0, acc=acc, tfidf=tfidf)
  points = [dict(trial=1, memory_bytes=100, config="small", sweep_acc=0.70, rows=[row([0.72, 0.74]), row([0.70])]),
            dict(trial=2, memory_bytes=300, config="big", sweep_acc=0.75, rows=[row([0.71]), row([0.71])]),
            dict(trial=3, memory_bytes=900, config="bigger", sweep_acc=0.74, rows=[row([0.76]), row([0.74])])]
  got = replicate.summarize(points)
  assert [s["front"] for s in got] == [True, False, True]
  assert got[0]["acc_mean"] == pytest.approx(0.715) and got[0]["gap"]["wins"] == 1
  assert "| 2 | 300 B | big | 75.00 | 0: 71.00, 0: 71.00 |" in replicate.table(got, "t", 1)


def test_the_gap_interval_is_over_splits():
  gaps = np.array([0.01, 0.02, -0.01])
  s = replicate.gap_summary(gaps)
  half = 4.302653 * gaps.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
  assert s["mean"] == pytest.approx(gaps.mean()) and s["wins"] == 2 and s["splits"] == 3
  assert (s["low"], s["high"]) == pytest.approx((gaps.mean() - half, gaps.mean() + half), rel=1e-5)
  assert math.isnan(replicate.gap_summary(gaps[:1])["low"])


def _sweep_folder(root, cfg, trials=(3,)):
  """What a finished sweep leaves that replicate reads: frontier.csv and each trial's finetune/config.json."""
  sweep = root / "sweep"
  sweep.mkdir()
  with (sweep / "frontier.csv").open("w", newline="") as f:
    w = csv.DictWriter(f, ["trial", "memory_bytes", "config", "test_accuracy", "pareto"])
    w.writeheader()
    for t in trials:
      w.writerow(dict(trial=t, memory_bytes=12345, config=f"tiny {t}", test_accuracy=0.625, pareto=True))
    w.writerow(dict(trial=99, memory_bytes=999999, config="dominated", pareto=False))
  for t in trials:
    run = sweep / "trials" / f"{t:04d}-abcdef-123456" / "finetune"
    run.mkdir(parents=True)
    (run / "config.json").write_text(cfg.to_json())
  return sweep


def test_a_sweeps_points_retrain_per_split_and_read_back(tmp_path, monkeypatch):
  cfg = tiny_config(tmp_path, steps=6, eval_every=3)
  sweep = _sweep_folder(tmp_path, cfg)
  out = tmp_path / "rep"
  got = replicate.run(sweep, [0, 1], 2, out)
  [point] = got
  assert point["trial"] == 3 and [r["split"] for r in point["rows"]] == [0, 1]
  for k, row in zip((0, 1), point["rows"]):
    assert len(row["acc"]) == 2 and all(0 <= a <= 1 for a in row["acc"])
    # the references are fitted on the split the point trained on
    assert (out / f"trial3/split{k}/seed_1/finetune/result.json").is_file()
    task = data.load_task(str(out / f"split{k}.jsonl"))
    assert row["majority"] == pytest.approx(np.mean(task.test.label == np.bincount(task.train.label).argmax()))
  assert point["gap"]["splits"] == 2
  report = (out / "replicates.md").read_text()
  assert "| 3 | 12.35 kB | tiny 3 | 62.50 | 0: " in report and "of 2 |" in report
  assert json.loads((out / "replicates.json").read_text())["points"][0]["rows"] == point["rows"]
  # a second call reads every finished seed back and trains nothing
  monkeypatch.setattr(loop, "run_seeds", lambda *a, **k: pytest.fail("retrained a finished run"))
  assert replicate.run(sweep, [0, 1], 2, out)[0]["rows"] == point["rows"]
  # another sweep's trial 3 must not read these runs back as its own
  other = tmp_path / "other"
  sweep.rename(other)
  with pytest.raises(data.DataError, match="holds replicates of"):
    replicate.run(other, [0], 2, out)


def test_bad_sweep_folders_fail_in_one_line(tmp_path):
  cfg = tiny_config(tmp_path, steps=6, eval_every=3)
  sweep = _sweep_folder(tmp_path, cfg)
  with pytest.raises(data.DataError, match="no frontier row for trial"):
    replicate.frontier_points(sweep, [7])
  own = sweep / "trials" / "0003-abcdef-123456" / "finetune" / "config.json"
  own.write_text(json.dumps({"task": "x", "lr": 1}))
  with pytest.raises(data.DataError, match="not a config of embbert_jax.train"):
    replicate.frontier_points(sweep)
  own.unlink()
  with pytest.raises(data.DataError, match="no finetune/config.json for trial 3"):
    replicate.frontier_points(sweep)
  proc = subprocess.run([sys.executable, "-m", "embbert_jax.replicate", str(tmp_path / "nowhere")],
                        capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no frontier.csv" in proc.stderr


def test_a_relative_task_path_names_the_fix_and_task_overrides_it(tmp_path, monkeypatch):
  """A sweep records a local file as typed; from another directory the path does not resolve."""
  cfg = tiny_config(tmp_path, steps=6, eval_every=3)
  monkeypatch.chdir(tmp_path)
  cfg.task = "task.jsonl:text=text"  # relative, with a field suffix
  sweep = _sweep_folder(tmp_path, cfg)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  with pytest.raises(data.DataError, match="relative to the directory the sweep ran in.*--task"):
    replicate.run(sweep, [0], 1, tmp_path / "rep")
  assert not (tmp_path / "rep" / "split0.jsonl").exists()
  got = replicate.run(sweep, [0], 1, tmp_path / "rep", task=str(tmp_path / "task.jsonl"))
  assert [r["split"] for r in got[0]["rows"]] == [0]
  assert data.local_file("rt_polarity") is None and data.local_file("a/b.csv:label=y") == Path("a/b.csv")


def test_set_retrains_the_points_with_one_change_even_a_field_the_trial_predates(tmp_path):
  """A trial recorded before label_columns existed trains as it ran (the field stays absent, so off); `--set
  label_columns=true` adds it, `--set` of an unknown field is one line before anything trains, and the
  overrides are part of the folder's identity (another --set must use another --out)."""
  old = tiny_config(tmp_path, steps=4, eval_every=4, token_vectors=True).to_dict()
  del old["label_columns"]
  assert "label_columns" not in replicate.trial_config(old)
  on = replicate.trial_config(old, ["label_columns=true", "learning_rate=0.002"])
  assert on.label_columns is True and on.learning_rate == 0.002 and on.model.hidden == old["model"]["hidden"]
  from embbert_jax import configs
  with pytest.raises(configs.UnknownField):
    replicate.trial_config(old, ["no_such_field=1"])
  cfg = tiny_config(tmp_path, steps=4, eval_every=4, token_vectors=True)
  cfg.label_columns = False
  sweep = _sweep_folder(tmp_path, cfg)
  out = tmp_path / "rep-lc"
  [point] = replicate.run(sweep, [0], 1, out, sets=["label_columns=true"])
  saved = json.loads((out / "trial3" / "split0" / "finetune" / "config.json").read_text())
  assert saved["label_columns"] is True and len(point["rows"][0]["acc"]) == 1
  assert json.loads((out / "source.json").read_text())["set"] == ["label_columns=true"]
  with pytest.raises(data.DataError, match="holds replicates of"):
    replicate.run(sweep, [0], 1, out)  # the same folder without the --set
  proc = subprocess.run([sys.executable, "-m", "embbert_jax.replicate", str(sweep), "--out", str(tmp_path / "x"),
                         "--set", "no_such_field=1"], capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no_such_field" in proc.stderr
  assert not (tmp_path / "x").exists()
