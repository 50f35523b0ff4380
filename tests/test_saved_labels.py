"""A trained model's folder names its labels itself: `predict` and `export` read them from any working
directory, also when the run's task was a relative path that no longer resolves there (they printed
0, 1, 2 instead of the names)."""

import json

from embbert_jax import artifacts, predict, train
from test_train import tiny_config


def test_label_names_travel_with_the_saved_model(tmp_path, monkeypatch):
  cfg = tiny_config(tmp_path, steps=4, eval_every=4)
  rows = [json.loads(line) for line in (tmp_path / "task.jsonl").read_text().splitlines()]
  names = {0: "bad", 1: "good"}
  (tmp_path / "named.jsonl").write_text("".join(json.dumps({**r, "label": names[r["label"]]}) + "\n" for r in rows))
  monkeypatch.chdir(tmp_path)
  cfg.task = "named.jsonl"  # relative, as a user types it
  train.train_and_evaluate(cfg, tmp_path / "run")
  saved = json.loads((tmp_path / "run" / "finetune" / "model" / artifacts.CONFIG_FILE).read_text())
  assert saved["label_names"] == ["bad", "good"] and saved["add_cls"] is True
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)  # "named.jsonl" does not resolve here
  p = predict.Predictor(tmp_path / "run")
  assert p.labels == ["bad", "good"]
  assert {line.split()[0] for line in p.lines(["good alpha beta", "bad gamma delta"])} <= {"bad", "good"}
