"""The trainer end to end on tiny generated data: learning, resume after SIGKILL, NaN, pre-training, mesh."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embbert_jax import batches, configs, evaluation, loop, memory, metrics, models, programs, runlog, train

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
TINY_MODEL = dict(vocab_size=96, max_len=32, hidden=16, embed_dim=8, conv_kernel=4, num_layers=1)


def write_fixture(root: Path, n: int = 320):
  """A corpus (documents of sentences) and a task whose label is whether 'good' occurs in the text."""
  rng = np.random.RandomState(0)
  docs = ["\n".join(" ".join(rng.choice(WORDS, 6)) for _ in range(8)) for _ in range(40)]
  corpus = root / "corpus.txt"
  corpus.write_text("\n\n".join(docs) + "\n\ngood bad good bad\n")
  rows = []
  for i in range(n):
    words = list(rng.choice(WORDS, 5))
    label = i % 2
    words.insert(rng.randint(0, 5), "good" if label else "bad")
    rows.append({"text": " ".join(words), "label": label})
  task = root / "task.jsonl"
  task.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return corpus, task


def tiny_config(root: Path, **kw):
  corpus, task = write_fixture(root)
  cfg = train.get_config("embbert", **TINY_MODEL)
  cfg.task, cfg.corpus, cfg.cache_dir = str(task), str(corpus), str(root / "cache")
  cfg.batch_size, cfg.learning_rate, cfg.log_every = 16, 3e-3, 5
  cfg.wandb.mode = "disabled"
  cfg.update(kw)
  return cfg


def test_seeds_in_a_relative_workdir_train_and_checkpoint(tmp_path, monkeypatch):
  """`train --seeds 3 --workdir runs/x`: the group folder is relative too, and orbax refuses a relative
  checkpoint path (it failed at the first save of the group)."""
  cfg = tiny_config(tmp_path, steps=4, eval_every=4)
  monkeypatch.chdir(tmp_path)
  out = train.run_seeds(cfg, Path("rel"), 2)
  assert not out["failed"] and len(out["runs"]) == 2
  assert (tmp_path / "rel" / "group_seeds_0-1" / "checkpoints" / "4").is_dir()


def test_paused_run_resumes_to_the_uninterrupted_result_and_plateau_stops(tmp_path):
  """stop_at pauses a run (the schedule still spans `steps`); the same workdir with a later stop_at goes
  on, and ends where one call would have: the sweep's rungs. patience stops a run that stopped improving."""
  sched = dict(kind="cosine", warmup_steps=0, warmup_fraction=0.1, end_fraction=0.0)
  whole = train.train_and_evaluate(tiny_config(tmp_path, steps=24, eval_every=6, schedule=sched),
                                   tmp_path / "whole")
  first = train.train_and_evaluate(tiny_config(tmp_path, steps=24, eval_every=6, stop_at=12,
                                               schedule=sched), tmp_path / "paused")
  assert first["steps"] == 12 and first["horizon"] == 24
  rest = train.train_and_evaluate(tiny_config(tmp_path, steps=24, eval_every=6, schedule=sched),
                                  tmp_path / "paused")
  assert rest["steps"] == 24 and rest["validation"] == whole["validation"]
  flat = train.train_and_evaluate(tiny_config(tmp_path, steps=60, eval_every=2, patience=1,
                                              learning_rate=0.0), tmp_path / "flat")
  assert flat["plateau"] and flat["steps"] == 4  # lr 0: the first evaluation is never beaten


def test_timing_counts_each_new_bucketed_shape_as_a_compile():
  """40 steps at 50 ms: the first step and the first steps of two more bucketed lengths each carry a
  ~2-3 s compile; they must not be averaged into the step time (it read 143-175 ms before)."""
  t = {"first_step_s": 3.0, "evals_s": [1.0, 0.2, 0.2], "checkpoint_s": 0.5, "new_shape_s": [2.05, 2.05]}
  elapsed = 3.0 + 4.1 + 1.4 + 0.5 + 0.05 * 37
  tm = runlog.split_time(t, elapsed, 40)
  assert tm["step_s"] == pytest.approx(0.05)
  assert tm["compile_s"] == pytest.approx(2.95 + 2 * 2.0 + 0.8)
  assert tm["compile_s"] + tm["train_s"] + tm["eval_s"] + tm["checkpoint_s"] == pytest.approx(elapsed)


def test_learns_a_keyword_task_and_writes_everything(tmp_path):
  cfg = tiny_config(tmp_path, steps=60, eval_every=20)
  res = train.train_and_evaluate(cfg, tmp_path / "run")
  assert res["test"]["accuracy"] > 0.8, res  # chance is 0.5
  assert set(res["test"]) == {"accuracy", "mcc", "macro_f1", "loss"} and res["metric"] == "mcc"
  assert 0 < res["validation"]["loss"] < 0.69  # below chance's log(2)
  tm = res["timing"]
  assert tm["evals"] == 3 and tm["step_s"] > 0 and tm["compile_s"] >= 0  # 0 once this process compiled it
  parts = tm["compile_s"] + tm["train_s"] + tm["eval_s"] + tm["checkpoint_s"]
  assert 0.5 * res["train_time_s"] < parts <= res["train_time_s"] * 1.05
  assert 0 < tm["init_s"] < res["train_time_s"]  # the initial params, timed apart from the training call
  assert res["best_step"] in (20, 40, 60) and res["seq_len"] == 32
  wd = Path(res["workdir"])
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert any("validation/mcc" in r for r in rows) and any("train/tokens_per_s" in r for r in rows)
  assert (wd / "model").exists() and (wd / "checkpoints").exists()


RUNNER = """
import sys, json
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_train import tiny_config
from embbert_jax import train
root = Path({root!r})
train.enable_compilation_cache(root / "xla")  # the three runs share compiled programs
cfg = tiny_config(root, steps=80, eval_every=20, checkpoint_every=10, log_every=10)
res = train.train_and_evaluate(cfg, root / {name!r})
print("RESULT" + json.dumps(res))
"""


def _run(tmp_path, name, kill_after_checkpoint=None):
  script = RUNNER.format(tests=str(Path(__file__).parent), root=str(tmp_path), name=name)
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, text=True)
  if kill_after_checkpoint is not None:
    ckpt = tmp_path / name / "finetune" / "checkpoints" / str(kill_after_checkpoint)
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return None
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  return json.loads(out.split("RESULT", 1)[1])


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  straight = _run(tmp_path, "straight")
  assert _run(tmp_path, "killed", kill_after_checkpoint=30) is None
  resumed = _run(tmp_path, "killed")
  for split in ("validation", "test"):
    for k, v in straight[split].items():
      assert resumed[split][k] == pytest.approx(v, abs=1e-6), (split, k)
  assert resumed["best_step"] == straight["best_step"]
  steps = [json.loads(l)["step"] for l in (tmp_path / "killed/finetune/metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(steps)  # rows a killed run wrote after its checkpoint were dropped, not duplicated


def test_nan_loss_stops_with_a_clear_error(tmp_path):
  # An absurd learning rate overflows the weights to inf within a few steps.
  cfg = tiny_config(tmp_path, steps=40, learning_rate=1e38, log_every=5, checkpoint_every=5, eval_every=5)
  with pytest.raises(train.TrainingDiverged, match="loss is (nan|inf)") as e:
    train.train_and_evaluate(cfg, tmp_path / "run")
  assert "last good checkpoint" in str(e.value) and "\n" not in str(e.value)


def test_pretrain_then_finetune_carries_the_encoder(tmp_path):
  cfg = tiny_config(tmp_path, steps=5)
  cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.eval_pairs = 20, 16, 32
  pre = train.pretrain(cfg, tmp_path / "pre")
  assert {"mlm_loss", "nsp_accuracy", "mlm_accuracy"} <= set(pre["validation"])
  enc = programs.load_encoder(str(tmp_path / "pre"), cfg.model)
  saved = jax.tree.leaves(enc)
  fresh = jax.tree.leaves(models.init_params(cfg.model, jax.random.key(cfg.seed))["encoder"])
  assert not all(np.allclose(a, b) for a, b in zip(saved, fresh))  # pre-training changed the encoder
  cfg.init_from = str(tmp_path / "pre")
  res = train.train_and_evaluate(cfg, tmp_path / "ft")
  assert np.isfinite(res["test"]["accuracy"])


def test_incompatible_encoder_is_refused(tmp_path):
  cfg = tiny_config(tmp_path, steps=2)
  cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.eval_pairs = 2, 16, 32
  train.pretrain(cfg, tmp_path / "pre")
  other = train.get_config("embbert", **{**TINY_MODEL, "hidden": 24})
  with pytest.raises(ValueError, match="does not match"):
    programs.load_encoder(str(tmp_path / "pre"), other.model)


MESH_RUNNER = """
import os, sys, json
sys.path.insert(0, {tests!r})
from pathlib import Path
import jax
from test_train import tiny_config
from embbert_jax import train
root = Path({root!r})
cfg = tiny_config(root, steps=10, eval_every=10)
res = train.train_and_evaluate(cfg, root / ("run%d" % jax.device_count()))
print("RESULT" + json.dumps({{"devices": jax.device_count(), "acc": res["validation"]["accuracy"],
                              "mcc": res["validation"]["mcc"]}}))
"""


def test_data_parallel_on_8_devices_matches_one_device(tmp_path):
  script = MESH_RUNNER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
  results = []
  for flags in ("", "--xla_force_host_platform_device_count=8"):
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results.append(json.loads(out.stdout.split("RESULT", 1)[1]))
  assert [r["devices"] for r in results] == [1, 8]
  assert results[0]["acc"] == pytest.approx(results[1]["acc"], abs=1e-6)


def test_workdir_with_another_config_is_refused(tmp_path):
  cfg = tiny_config(tmp_path, steps=2)
  train.train_and_evaluate(cfg, tmp_path / "run")
  cfg.learning_rate = 1e-4
  with pytest.raises(ValueError, match="different config"):
    train.train_and_evaluate(cfg, tmp_path / "run")


def test_mask_tokens_follows_bert_recipe():
  ids = jnp.asarray(np.random.RandomState(0).randint(5, 1000, (64, 256)), jnp.int32)
  ids = ids.at[:, 0].set(2).at[:, -10:].set(0)
  inputs, pos, targets, weights = jax.jit(batches.mask_tokens, static_argnums=2)(jax.random.key(0), ids, 1000)
  real = ids >= 5
  assert 0.14 < float(weights.sum() / real.sum()) < 0.16
  rows = jnp.arange(64)[:, None]
  scored = jnp.zeros(ids.shape, bool).at[rows, pos].max(weights > 0)
  assert not (scored & ~real).any()  # specials and padding are never targets
  assert (targets == ids[rows, pos]).all()
  changed = inputs != ids
  assert not (changed & ~scored).any()  # only scored positions are altered
  to_mask = float(((inputs == 3) & scored).sum() / scored.sum())
  unchanged = float(((inputs == ids) & scored).sum() / scored.sum())
  assert 0.77 < to_mask < 0.83 and 0.08 < unchanged < 0.12
  assert ((inputs >= 5) | (inputs == 3) | ~scored).all()  # random replacements are real tokens
  assert len(set(np.asarray(pos[0])[np.asarray(weights[0]) > 0].tolist())) == int(weights[0].sum())


def test_nsp_pairs_balanced_and_consecutive():
  docs = [["a1", "a2", "a3"], ["b1", "b2"]]
  first, second, labels = batches.nsp_pairs(docs)
  assert labels.tolist() == [0, 0, 0, 1, 1, 1]
  assert list(zip(first[:3], second[:3])) == [("a1", "a2"), ("a2", "a3"), ("b1", "b2")]
  assert second[3:] == second[:3]


def test_batches_resume_exactly():
  arr = batches.Arrays(np.arange(100)[:, None].astype(np.int32), np.zeros(100, np.int32))
  full = [(s, b["ids"][:, 0].tolist()) for _, (s, b) in zip(range(12), batches.train_batches(arr, 16, seed=3))]
  later = [(s, b["ids"][:, 0].tolist())
           for _, (s, b) in zip(range(5), batches.train_batches(arr, 16, seed=3, start_step=7))]
  assert later == full[7:12]
  assert len({tuple(ids) for _, ids in full[:6]}) == 6  # 6 batches per epoch, all different


def test_metrics_against_hand_computed_values():
  labels = np.array([0, 0, 1, 1, 1, 0])
  preds = np.array([0, 1, 1, 1, 0, 0])
  logits = np.eye(2)[preds]
  m = metrics.classification_metrics(labels, logits)
  tp, tn, fp, fn = 2, 2, 1, 1
  mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  assert m["accuracy"] == pytest.approx(4 / 6) and m["mcc"] == pytest.approx(mcc)
  assert m["macro_f1"] == pytest.approx(2 / 3)
  assert metrics.classification_metrics(labels, np.zeros((6, 2)))["mcc"] == 0.0  # constant prediction
  r = metrics.regression_metrics(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 45]))
  assert r["spearman"] == pytest.approx(1.0)


def test_several_seeds_report_mean_and_std(tmp_path):
  cfg = tiny_config(tmp_path, steps=4, eval_every=4)
  out = train.run_seeds(cfg, tmp_path / "seeds", seeds=2)
  accs = [r["test"]["accuracy"] for r in out["runs"]]
  assert [Path(r["workdir"]).parent.name for r in out["runs"]] == ["seed_0", "seed_1"]
  mean, std = out["summary"]["test/accuracy"]
  assert mean == pytest.approx(np.mean(accs)) and std == pytest.approx(np.std(accs))


def _solo_and_grouped(tmp_path, variants, report=None, **kw):
  base = tiny_config(tmp_path, steps=20, eval_every=10, **kw)
  cfgs = []
  for v in variants:
    c = base.copy_and_resolve_references()
    c.update(v)
    cfgs.append(c)
  name = "g" + base.group_impl
  grouped = train.train_group(cfgs, [tmp_path / f"{name}{i}" for i in range(len(cfgs))], report=report)
  return cfgs, grouped


def test_grouped_members_match_training_each_alone(tmp_path):
  from embbert_jax import export
  variants = [dict(seed=0), dict(seed=1), dict(seed=0, learning_rate=1e-2, weight_decay=0.0)]
  groups = [_solo_and_grouped(tmp_path, variants, group_impl=impl) for impl in ("map", "vmap")]
  for i, c in enumerate(groups[0][0]):
    solo = train.train_and_evaluate(c, tmp_path / f"solo{i}")
    p_solo = jax.tree.leaves(export.load_model(Path(solo["workdir"]) / "model")[0])
    for _, grouped in groups:
      assert grouped[i]["status"] == "complete" and grouped[i]["group_size"] == 3
      assert solo["best_step"] == grouped[i]["best_step"]
      for split in ("validation", "test"):
        for k, v in solo[split].items():
          assert grouped[i][split][k] == pytest.approx(v, abs=1e-5), (i, split, k)
      p_group = jax.tree.leaves(export.load_model(Path(grouped[i]["workdir"]) / "model")[0])
      for a, b in zip(p_solo, p_group):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  grouped = groups[0][1]  # the members really differ: seeds and learning rates reach the program
  assert len({json.dumps(g["validation"]) for g in grouped}) == 3


def test_a_diverging_member_fails_alone_and_a_pruned_one_stops(tmp_path):
  def report(i, step, validation):
    if i == 2 and step >= 10:
      raise train.Pruned("member 2 is hopeless")

  variants = [dict(seed=0), dict(seed=0, learning_rate=1e38), dict(seed=1)]
  cfgs, grouped = _solo_and_grouped(tmp_path, variants, report, group_impl="vmap")
  assert grouped[0]["status"] == "complete"
  assert grouped[1]["status"] == "failed" and "loss is" in grouped[1]["error"]
  assert grouped[2] == {"status": "pruned", "error": "member 2 is hopeless", "pruned_at": 10}
  solo = train.train_and_evaluate(cfgs[0], tmp_path / "solo")
  assert grouped[0]["validation"]["accuracy"] == pytest.approx(solo["validation"]["accuracy"], abs=1e-6)
  assert not (tmp_path / "gvmap1" / "finetune" / "result.json").exists()


def test_group_members_must_share_shapes(tmp_path):
  a = tiny_config(tmp_path, steps=2)
  b = a.copy_and_resolve_references()
  b.model.hidden = 24
  with pytest.raises(ValueError, match="may differ only in"):
    train.train_group([a, b], [tmp_path / "a", tmp_path / "b"])
  assert train.group_key(a) != train.group_key(b)
  c = a.copy_and_resolve_references()
  c.seed, c.learning_rate = 5, 0.1
  assert train.group_key(a) == train.group_key(c)


def test_group_size_follows_memory():
  small, big = train.get_config("nano"), train.get_config("big")
  assert train.max_group_size(small) >= train.max_group_size(big) >= 1
  assert memory.training_bytes(big.model, big.batch_size) > 10 * memory.training_bytes(small.model, small.batch_size)


def test_bucketed_group_trains_and_matches_its_solo_run(tmp_path):
  # Bucketed batches have per-batch lengths (32 or 64 here); members' batches are padded to a common
  # one, which must not change anything a member computes.
  rng = np.random.RandomState(1)
  rows = [{"text": " ".join(rng.choice(WORDS, int(n)) + (" good" if i % 2 else " bad")), "label": i % 2}
          for i, n in enumerate(rng.choice([3, 4, 40], 320))]
  (tmp_path / "varied.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfgs = []
  for seed in (0, 3):
    c = tiny_config(tmp_path, steps=12, eval_every=6, seed=seed, bucket_window=4)
    c.task, c.model.max_len = str(tmp_path / "varied.jsonl"), 64
    c.bucket_compile_gflop = 0.0  # both widths, however cheap the model (programs.bucket_ladder would keep one)
    # Dropout masks are drawn per batch shape, so a batch padded to 64 draws other masks than at 32
    # (with nn.Dropout too: threefry bits are not stable under a larger shape); without dropout the
    # padded member must compute what it computes alone.
    c.model.dropout = 0.0
    cfgs.append(c)
  enc = loop.prepare_task(cfgs[0])[2]
  lengths = {b["ids"].shape[1] for _, (_, b) in zip(range(20), batches.train_batches(enc["train"], 16, 0, 0, 4))}
  assert lengths == {32, 64}  # the windows do produce batches of both lengths
  grouped = train.train_group(cfgs, [tmp_path / "g0", tmp_path / "g1"])
  solo = train.train_and_evaluate(cfgs[1], tmp_path / "solo")
  assert grouped[1]["seq_len"] == 64
  for k, v in solo["validation"].items():  # the loss is continuous: float32 sums in another order
    assert grouped[1]["validation"][k] == pytest.approx(v, abs=1e-5, rel=1e-3 if k == "loss" else 0), k


@pytest.mark.parametrize("arch", ["embbert", "mamba"])
def test_init_members_gives_the_values_of_one_program_vmapped_over_the_seeds(arch):
  """init_members jits one member's init and calls it per seed (it compiles faster than the program
  vmapped over the group's seeds): the stacked values must be those of the vmapped program, bit for bit,
  in order. (XLA level 1 for this program, 0.7-0.85x the compile, failed it: 24 of 512 token-table values
  of the embbert one differed in the last bit.)"""
  extra = dict(arch="mamba", d_state=4, d_conv=4, dt_rank=2, mamba_expand=2.0) if arch == "mamba" else {}
  cfg = train.get_config("embbert", **TINY_MODEL, **extra).model
  got = programs.init_members(cfg, [5, 3])
  want = jax.jit(jax.vmap(lambda s: models.init_params(cfg, jax.random.key(s))))(np.array([5, 3], np.int32))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(jax.tree.leaves(got)[0][0], jax.tree.leaves(got)[0][1])


def test_width_gflop_is_xlas_count_and_its_quadratic_is_exact():
  """Attention is quadratic in the width, the rest linear (the blocked Toeplitz conv of conv_expansion 2
  too): widths past the three lowered ones (32, 160, 256) come from the quadratic through them, which
  must equal XLA's own count there (a wrong knot or a fit of the wrong degree would not)."""
  cfg = train.get_config("embbert", vocab_size=96, max_len=256, hidden=16, embed_dim=8, conv_kernel=4,
                         num_layers=2, conv_expansion=2.0).model
  widths = [32, 64, 96, 128, 160, 192, 224, 256]
  fitted = programs.width_gflop(cfg, widths)
  lowered = [programs._forward_gflop(configs.ModelConfig.from_dict(cfg), w) for w in (64, 128, 224)]
  np.testing.assert_allclose(fitted[[1, 3, 6]], lowered, rtol=1e-5)
  np.testing.assert_allclose(programs.width_gflop(cfg, [64, 128, 224]), lowered, rtol=1e-12)  # <= 3: lowered
  per_token = fitted / np.asarray(widths)
  assert np.all(np.diff(per_token) > 0)  # quadratic terms: a wider example costs more per token


def varied_lengths_config(tmp_path):
  """A bucketed 40-step run of the tiny model on a task whose examples need widths 32 and 64."""
  rng = np.random.RandomState(1)
  rows = [{"text": " ".join(rng.choice(WORDS, int(n))), "label": i % 2}
          for i, n in enumerate(rng.choice([3, 4, 40], 320))]
  (tmp_path / "varied.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = tiny_config(tmp_path, steps=40, bucket_window=4)
  cfg.task, cfg.model.max_len = str(tmp_path / "varied.jsonl"), 64
  return cfg


def test_bucket_ladder_buys_a_width_only_where_it_saves_more_than_its_compile(tmp_path):
  """A short bucketed run of a small model keeps one width (a compile costs more than the padding saves),
  a long enough run buys the narrow width, no price keeps the least-padding ladder; the run records it."""
  cfg = varied_lengths_config(tmp_path)
  arrays = loop.prepare_task(cfg)[2]["train"]
  assert programs.bucket_ladder(cfg, arrays, 40) == (64,)
  assert programs.bucket_ladder(cfg, arrays, 10**7) == (32, 64)
  cfg.bucket_steps = 40  # priced over 40 steps, whatever the run's length (a sweep: a trial's mean)
  assert programs.bucket_ladder(cfg, arrays, 10**7) == (64,)
  cfg.bucket_steps = 0
  price = float(cfg.bucket_compile_gflop)
  cfg.bucket_compile_gflop = 0.0
  assert programs.bucket_ladder(cfg, arrays, 40) == (32, 64)  # unpriced: the least-padding ladder
  cfg.bucket_compile_gflop, cfg.bucket_window = price, 0
  assert programs.bucket_ladder(cfg, arrays, 10**7) is None  # no bucketing: one width, the arrays'
  cfg.bucket_window = 4
  out = train.train_and_evaluate(cfg, tmp_path / "run")
  assert out["widths"] == [64] and out["seq_len"] == 64  # the widths its steps ran at
  assert json.loads((tmp_path / "run" / "finetune" / "ladder.json").read_text()) == {"widths": [64]}


def test_a_backend_without_flop_counts_buckets_as_the_unpriced_ladder(tmp_path, monkeypatch):
  cfg = varied_lengths_config(tmp_path)
  monkeypatch.setattr(programs, "width_gflop", lambda model, widths: np.full(len(widths), np.nan))
  assert programs.bucket_ladder(cfg, loop.prepare_task(cfg)[2]["train"], 40) == (32, 64)


def test_interrupted_group_resumes_to_the_uninterrupted_result(tmp_path):
  variants = [dict(seed=0), dict(seed=1, learning_rate=1e38), dict(seed=2)]  # member 1 fails at once
  base = tiny_config(tmp_path, steps=20, eval_every=5, checkpoint_every=5)
  cfgs = []
  for v in variants:
    c = base.copy_and_resolve_references()
    c.update(v)
    cfgs.append(c)
  straight = train.train_group(cfgs, [tmp_path / f"s{i}" for i in range(3)])

  def stop_at_15(i, step, validation):
    if step == 15:
      raise KeyboardInterrupt  # after the checkpoint of step 10, before that of step 15
  dirs = [tmp_path / f"k{i}" for i in range(3)]
  with pytest.raises(KeyboardInterrupt):
    train.train_group(cfgs, dirs, report=stop_at_15)
  # What a SIGKILL in the middle of a write leaves: a metrics row cut short, and a half-written temporary
  # members.json beside the whole one (files.py writes by rename). Neither may be read back as the truth.
  metrics_file = dirs[0] / "finetune" / "metrics.jsonl"
  with open(metrics_file, "a") as f:
    f.write('{"step": 14, "train/lo')
  [members] = [g / "members.json" for g in tmp_path.glob("group-*")
               if str(dirs[0]) in (g / "config.json").read_text()]
  (members.parent / f".members.json.{os.getpid() + 1}.tmp").write_text('{"1": {"status": "fai')
  resumed = train.train_group(cfgs, dirs)
  rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]  # every row whole again
  assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) and rows[-1]["step"] == 20
  assert [r["status"] for r in resumed] == ["complete", "failed", "complete"]
  for a, b in zip(straight, resumed):
    if a["status"] == "complete":
      assert a["best_step"] == b["best_step"]
      for k, v in a["test"].items():
        assert b["test"][k] == pytest.approx(v, abs=1e-6), k


HOLDER = ("import sys, time\nfrom embbert_jax import files\nwith files.folder_lock(sys.argv[1]):\n"
          "  print('held', flush=True)\n  time.sleep(600)\n")


def test_a_workdir_in_use_by_another_process_is_refused_in_one_line(tmp_path, capsys):
  """Two runs on one --workdir: the second stops at once with one line naming the holder (its pid and host),
  before it writes anything; the lock dies with its process (a SIGKILLed holder's .lock file blocks
  nobody); within one process it is re-entrant and released when the training call ends (a sweep worker
  trains a trial again in the same process)."""
  import socket
  from embbert_jax import files
  cfg = tiny_config(tmp_path, steps=2)
  run = tmp_path / "run"
  env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(SystemExit) as e:
      train.main(["--task", cfg.task, "--workdir", str(run), "--steps", "2", "--init", "scratch",
                  "--wandb", "disabled", "--set", f"corpus={cfg.corpus}", "--set", f"cache_dir={cfg.cache_dir}",
                  *(f"--set=model.{k}={v}" for k, v in TINY_MODEL.items())])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {run} is in use by pid {holder.pid} on {socket.gethostname()}; wait for that run "
                   "to end (or stop it), or use another folder"], err
    with pytest.raises(files.FolderBusy, match=f"pid {holder.pid}"):  # pre-training too
      loop.pretrain(cfg, run)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing else written
  finally:
    holder.kill()
    holder.wait()
  assert (run / ".lock").read_text().split()[0] == str(holder.pid)  # left behind by the dead holder
  with files.folder_lock(run):  # held here (a sweep worker resuming a trial): the run nests in it
    result = train.train_and_evaluate(cfg, run)
  assert result["steps"] == 2 and not files._held  # every folder released when the call ended


def test_sigterm_under_signals_deferred_stops_fit_at_the_next_step(tmp_path):
  """The sweep worker's handler only sets a flag (signals.py); loop.fit acts on it at the next step
  boundary (Preempted), after the step's checkpoint; a rerun resumes from there."""
  from embbert_jax import signals
  cfg = tiny_config(tmp_path, steps=10, eval_every=5)
  seen = []

  def report(step, validation):
    seen.append(step)
    if step == 5 and len(seen) == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # lands somewhere in the loop; only recorded

  before = signal.getsignal(signal.SIGTERM)
  with signals.deferred():
    with pytest.raises(signals.Preempted, match="SIGTERM"):
      train.train_and_evaluate(cfg, tmp_path / "run", report=report)
  assert signal.getsignal(signal.SIGTERM) == before and signals.requested() is None
  assert sorted(p.name for p in (tmp_path / "run/finetune/checkpoints").iterdir() if p.name.isdigit()) == ["5"]
  result = train.train_and_evaluate(cfg, tmp_path / "run", report=report)
  assert result["steps"] == 10 and seen == [5, 10]


def test_wandb_run_of_a_training_has_job_type_tags_and_memory(tmp_path, monkeypatch):
  """runlog.Logger: job_type train/pretrain, tags (kind, task, preset), the model's memory under every policy
  and its parameter count in config and summary; the run lives in the workdir unless WANDB_DIR is set."""
  from embbert_jax import runlog
  for var in ("WANDB_DIR", "WANDB_JOB_TYPE", "WANDB_TAGS"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("WANDB_MODE", "offline")
  cfg = tiny_config(tmp_path)
  cfg.wandb.mode = "auto"
  for kind, job in (("finetune", "train"), ("pretrain", "pretrain")):
    log = runlog.Logger(tmp_path / kind, cfg, 0, kind)
    run = log.run
    assert run.job_type == job and list(run.tags) == [job, "task", "embbert"]
    for policy in memory.POLICIES:
      r = memory.estimate(cfg.model, policy)
      assert run.config["memory"][policy] == {"weight_bytes": r.weight_bytes, "total_bytes": r.total_bytes,
                                              "activation_bytes": r.activation_bytes}
      assert run.summary[f"memory/{policy}/total_bytes"] == r.total_bytes
    assert run.config["params"] == run.summary["params"] == memory.num_params(cfg.model)
    assert Path(run.dir).is_relative_to(tmp_path / kind)
    log.close()


def test_the_program_cache_keeps_its_size_then_flushes_everything_and_trims_the_heap(monkeypatch):
  """A sweep worker's programs (README, Memory over a long sweep): at most PROGRAM_CACHE_SIZE shapes stay;
  the next new one flushes them all and hands the freed heap back (hostmem.trim_heap)."""
  trims = []
  monkeypatch.setattr(programs, "_PROGRAMS", {})
  monkeypatch.setattr(programs, "_programs", lambda *key: object())  # no compile: the policy only
  monkeypatch.setattr(programs.hostmem, "trim_heap", lambda: trims.append(1) or True)
  kept = [programs._cached_programs(k) for k in range(programs.PROGRAM_CACHE_SIZE)]
  assert programs._cached_programs(0) is kept[0] and not trims  # a shape that is kept is reused
  programs._cached_programs("new")
  assert trims == [1] and list(programs._PROGRAMS) == [("new",)]  # keyed on the programs' arguments


def test_evaluations_do_not_retrace_the_step(tmp_path):
  """The state after an evaluation (keep_best) has the types the step was compiled for: a weakly typed
  initial best score once made every trial trace and compile (or reload) its step and keep_best twice."""
  programs.release_programs()
  cfg = tiny_config(tmp_path, steps=24, eval_every=6, bucket_window=0)
  train.train_and_evaluate(cfg, tmp_path / "run")
  [progs] = programs._PROGRAMS.values()
  assert progs.step._cache_size() == 1 and progs.keep_best._cache_size() == 1


@pytest.mark.parametrize("preset", ["embbert", "bert"])
def test_bucketed_evaluation_gives_the_full_width_metrics(preset):
  """A padding-invariant model is evaluated at the run's narrower widths, in length order, with the
  metrics of every example at the arrays' full width; a published one (bert reads its padding) is not."""
  from types import SimpleNamespace
  cfg = train.get_config(preset, vocab_size=96, max_len=96, hidden=16, num_layers=1, num_labels=3,
                         **(dict(embed_dim=8, conv_kernel=4) if preset == "embbert" else
                            dict(ffn_dim=32, num_heads=2, attend_to_pad=True)))
  rng = np.random.default_rng(0)
  lengths = rng.choice([3, 20, 40, 90], 150)
  ids = rng.integers(5, 96, (150, 96)).astype(np.int32)
  ids[np.arange(96)[None] >= lengths[:, None]] = 0
  enc = {s: batches.Arrays(ids[i::2], rng.integers(0, 3, 75).astype(np.int32)) for i, s in
         enumerate(("validation", "test"))}
  model = models.Classifier(configs.ModelConfig.from_dict(cfg.model))
  params_G = jax.vmap(lambda k: model.init(k, ids[:2])["params"])(jax.random.split(jax.random.key(0), 2))
  shapes = []

  def apply(p_G, batch_ids):
    shapes.append(batch_ids.shape[1])
    return jax.vmap(lambda p: model.apply({"params": p}, batch_ids))(p_G)

  full = evaluation.classify_eval(SimpleNamespace(apply=apply), cfg, enc, False)(params_G)
  assert set(shapes) == {96}
  shapes.clear()
  bucketed = evaluation.classify_eval(SimpleNamespace(apply=apply), cfg, enc, False, (32, 64, 96))(params_G)
  assert set(shapes) == ({32, 64, 96} if preset == "embbert" else {96})
  for member_full, member_bucketed in zip(full, bucketed):
    for split in enc:
      for name, value in member_full[split].items():
        assert member_bucketed[split][name] == pytest.approx(value, abs=1e-5), (split, name)
