"""Standalone pre-training: a fixed held-out slice disjoint from training, the schedule, the time budget
and its manifest, and resume (after a budget stop or a kill) to exactly the uninterrupted run."""

import json

import jax
import numpy as np
import pytest

from embbert_jax import artifacts, batches, data, files, inits, loop, pretraining
from embbert_jax import tokenizer as tok_lib
from test_train import tiny_config


def _rows(arr):
  return {r.tobytes() for r in np.asarray(arr.ids)}


def test_held_out_slice_is_fixed_and_no_training_pair_shares_a_sentence(tmp_path):
  cfg = tiny_config(tmp_path)
  docs = data.read_documents(cfg.corpus)
  tok = tok_lib.get_tokenizer(96, corpus_path=cfg.corpus, cache_dir=cfg.cache_dir)
  train_docs, held_docs = pretraining.split_documents(docs, 32)
  held_sents = {s for d in held_docs for s in d}
  assert held_sents and not held_sents & {s for d in train_docs for s in d}
  train, held, info = pretraining.split_pairs(docs, tok, 32, 0, 32)
  assert len(held) == info["pairs"]["held_out"] == 32 and not _rows(held) & _rows(train)
  assert set(np.asarray(held.labels).tolist()) == {0, 1}
  # The same slice whatever the run's seed or subsample: curves of different runs compare.
  train1, held1, info1 = pretraining.split_pairs(docs, tok, 32, 1, 32, max_pairs=50)
  np.testing.assert_array_equal(held1.ids, held.ids)
  assert len(train1) == info1["pairs"]["train_used"] == 50 and not _rows(held1) & _rows(train1)
  with pytest.raises(ValueError, match="too small"):
    pretraining.split_documents(docs, 10_000)


def _cfg(root, steps, eval_every, **schedule):
  cfg = tiny_config(root, log_every=1)
  cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.eval_pairs = steps, 16, 32
  cfg.pretrain.eval_every = eval_every
  cfg.pretrain.schedule.update(schedule)
  return cfg


def _update_norms(workdir):
  return {r["step"]: r["train/update_norm"] for r in files.read_jsonl(workdir / "metrics.jsonl")
          if "train/update_norm" in r}


def test_pretraining_follows_its_schedule(tmp_path):
  warm = _cfg(tmp_path, 4, 4, kind="constant", warmup_steps=2, warmup_fraction=0.0)
  loop.pretrain(warm, tmp_path / "warm")
  norms = _update_norms(tmp_path / "warm")
  assert norms[1] == 0.0 and norms[2] > 0 and norms[3] > 0  # shape(0) = 0: the first update is empty
  flat = _cfg(tmp_path, 4, 4, kind="constant", warmup_steps=0, warmup_fraction=0.0)
  loop.pretrain(flat, tmp_path / "flat")
  assert _update_norms(tmp_path / "flat")[1] > 0
  manifest = json.loads((tmp_path / "warm" / "model" / "manifest.json").read_text())
  assert manifest["recipe"]["schedule"]["warmup_steps"] == 2


def _params(workdir):
  return jax.tree.leaves(artifacts.load_model(workdir / "model")[0])


def test_time_budget_stops_saves_and_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
  cfg = _cfg(tmp_path, 20, 5)
  stopped = loop.pretrain(cfg, tmp_path / "budget", time_budget=1.0, command="python -m test")
  assert stopped["stopped_by"] == "time budget" and 0 < stopped["steps"] < 20
  manifest = json.loads((tmp_path / "budget" / "model" / "manifest.json").read_text())
  assert manifest["command"] == "python -m test" and manifest["steps"] == stopped["steps"]
  assert manifest["corpus_sha256"] == files.sha256_file(cfg.corpus) and manifest["seed"] == cfg.seed
  assert manifest["stopped_by"] == "time budget" and manifest["wall_s"] > 0
  assert {"mlm_loss", "mlm_perplexity", "mlm_accuracy", "nsp_accuracy"} <= set(manifest["final"])
  assert manifest["final"]["mlm_perplexity"] == pytest.approx(np.exp(manifest["final"]["mlm_loss"]))
  assert manifest["data"]["pairs"]["held_out"] == 32

  resumed = loop.pretrain(cfg, tmp_path / "budget")
  whole = loop.pretrain(cfg, tmp_path / "whole")
  assert resumed["steps"] == whole["steps"] == 20 and whole["stopped_by"] == "steps"
  for a, b in zip(_params(tmp_path / "whole"), _params(tmp_path / "budget")):
    np.testing.assert_array_equal(a, b)
  assert resumed["validation"] == whole["validation"]
  rows = files.read_jsonl(tmp_path / "whole" / "metrics.jsonl")
  assert [r["step"] for r in rows if "progress/eta_s" in r] == [5, 10, 15, 20]

  # Killed mid-chunk (after the step-5 checkpoint), the same call resumes to the same params.
  real = batches.train_batches

  def dying(*a, **kw):
    for step, batch in real(*a, **kw):
      if step == 8:
        raise KeyboardInterrupt
      yield step, batch
  monkeypatch.setattr(batches, "train_batches", dying)
  with pytest.raises(KeyboardInterrupt):
    loop.pretrain(cfg, tmp_path / "killed")
  monkeypatch.setattr(batches, "train_batches", real)
  # The killed run left the encoder of its last checkpoint, usable as `--init` while a run goes on.
  snap = json.loads((tmp_path / "killed" / "model" / "manifest.json").read_text())
  assert snap["steps"] == 5 and snap["stopped_by"] == "in progress" and snap["target_steps"] == 20
  at5 = [r for r in files.read_jsonl(tmp_path / "whole" / "metrics.jsonl")
         if r["step"] == 5 and "validation/mlm_loss" in r][0]
  assert snap["final"]["mlm_loss"] == pytest.approx(at5["validation/mlm_loss"])
  fine = cfg.copy_and_resolve_references()
  fine.pretrain.steps = 0
  init = inits.resolve(fine, str(tmp_path / "killed"))
  assert init.kind == "pretrained" and init.steps == 5
  assert loop.pretrain(cfg, tmp_path / "killed")["validation"] == whole["validation"]
  for a, b in zip(_params(tmp_path / "whole"), _params(tmp_path / "killed")):
    np.testing.assert_array_equal(a, b)


def test_the_clock_sizes_chunks_to_the_budget():
  free = pretraining.Clock(None)
  assert free.chunk_end(150, 10_000, 1000) == 1000 and free.chunk_end(950, 960, 1000) == 960
  c = pretraining.Clock(100.0, elapsed_before=90.0)
  assert c.chunk_end(0, 10_000, 1000) == 50  # the first chunk is short: it measures the rate
  c.record(50, 10.0)  # 0.2 s a step, compile included
  c.record(100, 10.0)  # 0.1 s a step: the rate from here on
  assert c.sec_per_step == pytest.approx(0.1)
  assert 240 <= c.chunk_end(150, 10_000, 1000) <= 250  # about 10 s left
  c.before = 99.5  # 5 steps left: a sliver of a chunk, not worth an evaluation and a checkpoint
  assert c.chunk_end(150, 10_000, 1000) == 150
  c.before = 100.0
  assert c.chunk_end(150, 10_000, 1000) == 150


@pytest.mark.parametrize("argv,expected", [
    (["--time-budget", "2x"], "cannot read the time budget '2x'"),
    (["--max-pairs", "-1"], "--max-pairs: must be >= 0"),
    (["--set", "pretrain.schedule.kind=cosin"], "pretrain.schedule.kind must be one of constant, cosine, linear"),
    (["--set", "pretrain.schedule.warmup_fraction=2"], "pretrain.schedule.warmup_fraction must be in [0.0, 1.0]"),
])
def test_pretrain_cli_refuses_a_bad_budget_or_recipe_in_one_line(tmp_path, capsys, argv, expected, monkeypatch):
  from embbert_jax import pretrain, train
  monkeypatch.setattr(train, "pretrain", lambda *a, **k: pytest.fail("bad input reached pre-training"))
  with pytest.raises(SystemExit) as e:
    pretrain.main(["--steps", "5", "--wandb", "disabled", "--workdir", str(tmp_path / "run"), *argv])
  err = capsys.readouterr().err
  assert e.value.code == 2 and expected in err, err
