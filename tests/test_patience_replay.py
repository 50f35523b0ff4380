"""benchmarks/patience_replay.py: the plateau rule it replays is the trainer's (the sweep's --patience)."""

import json

from benchmark_scripts import load


def test_replay_stops_where_the_trainer_would_and_keeps_its_best(tmp_path, capsys):
  bench = load("patience_replay")
  # t5-rt seed 1 (rt_polarity, validated once an epoch): the best at epoch 3, then overfitting.
  values = [0.324, 0.539, 0.549, 0.526, 0.486, 0.491, 0.483, 0.468, 0.477, 0.468]
  assert bench.replay(values, 0) == (2, 10)
  assert bench.replay(values, 4) == (2, 7)  # 4 evaluations without a new best: stop after the 7th
  assert bench.replay(values, 2) == (2, 5)
  # A tie does not improve the best (loop.fit keeps the first), and a late best is lost to a short patience.
  assert bench.replay([0.5, 0.5, 0.4, 0.6], 2) == (0, 3)
  assert bench.replay([0.5, 0.5, 0.4, 0.6], 3) == (3, 4)
  run = tmp_path / "run" / "seed_0" / "finetune"
  run.mkdir(parents=True)
  rows = [{"step": 10 * (i + 1), "validation/mcc": v, "test/accuracy": 0.7 + v / 10} for i, v in enumerate(values)]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + [{"step": 5, "train/loss": 1}]))
  bench.main([str(tmp_path / "run"), "--patience", "4"])
  out = capsys.readouterr().out
  assert "1 curves" in out and "| 4 | 1 of 1 | 0.0000 mcc | 75.49 % | 75.49 % | 30 % |" in out
