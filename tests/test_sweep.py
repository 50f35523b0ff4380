"""The sweep: space enumeration and the budget filter, Pareto fronts, the shared ledger under concurrent and
killed workers (SQLite and PostgreSQL), bad input, failed trials, the report command.

Most tests train with a fake trainer (FAKE_TRAINER below, written to a file so that worker subprocesses can
load it with --trainer): no JAX, a deterministic validation curve from the config, train.train_group's
contract (members in lockstep, per-member outcomes), the real trainer's wandb run (runlog.Logger) when the
sweep asks for wandb, and environment knobs for slow steps (also spent inside a garbage-collector callback),
NaN losses, a failing group program, an interrupt, a workdir held by another process, a trainer without
train_group, and a log of every training start with the trials trained in the same call. Two slow tests run the real trainer (one trial at a time, grouped).
"""

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from embbert_jax import configs, memory, pareto, sweep
from embbert_jax import ledger as ledger_lib
from embbert_jax import space as space_lib

REPO = Path(__file__).resolve().parent.parent

FAKE_TRAINER = '''
"""Fake trainer: validation mcc grows with log(params), plus a little config-hash noise; a higher learning
rate and a higher seed score more. train_group trains members in lockstep, as train.train_group does."""
import gc, hashlib, json, math, os, time
from pathlib import Path
import ml_collections
from embbert_jax import configs, memory

NEEDS_DATA = False
GROUP_KNOBS = ("seed", "learning_rate", "weight_decay", "wandb.name", "wandb.group")


class Pruned(Exception):
  pass


class TrainingDiverged(RuntimeError):
  pass


def get_config(preset="embbert"):
  c = ml_collections.ConfigDict()
  c.preset, c.model, c.task, c.seed = preset, ml_collections.ConfigDict(), "rt_polarity", 0
  c.batch_size, c.learning_rate, c.steps, c.eval_every, c.log_every = 32, 5e-5, 0, 0, 50
  c.stop_at, c.patience = 0, 0
  c.pretrain = ml_collections.ConfigDict(dict(steps=0))
  c.wandb = ml_collections.ConfigDict(dict(mode="auto", project="embbert_jax", group="", name=""))
  return c


_IN_GC = [0.0]
# FAKE_STEP_IN_GC: a step's time passes inside a garbage-collector callback, as JAX's callbacks run; an
# exception a signal handler raises there is printed as "Exception ignored" and dropped.
gc.callbacks.append(lambda phase, info: phase == "start" and _IN_GC[0] and time.sleep(_IN_GC[0]))


def _step():
  s = float(os.environ.get("FAKE_STEP_S", "0"))
  if not os.environ.get("FAKE_STEP_IN_GC"):
    return time.sleep(s)
  _IN_GC[0] = s
  try:
    gc.collect()
  finally:
    _IN_GC[0] = 0.0


def group_key(cfg):
  d = cfg.to_dict()
  d.update(seed=None, learning_rate=None, wandb={**d["wandb"], "name": None, "group": None})
  return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def max_group_size(cfg):
  return int(os.environ.get("FAKE_GROUP_MAX", "64"))


LATER_FIELDS = ("label_readout",)  # model fields added after these scenarios were designed


def final_score(cfg):
  """A deterministic score per config; model fields added later are left out while at their defaults,
  so a new field does not reshuffle the scores the pruning scenarios below were designed on."""
  d = {k: v for k, v in cfg.model.to_dict().items()
       if k not in LATER_FIELDS or v != getattr(configs.ModelConfig(), k)}
  h = int(hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8], 16)
  sign = -1.0 if os.environ.get("FAKE_BIGGER_IS_WORSE") else 1.0
  return (0.3 + sign * 0.05 * math.log10(memory.num_params(cfg.model)) + 0.01 * (h % 100) / 100
          + 0.01 * cfg.seed + (0.2 if cfg.learning_rate >= 3e-3 else 0.0))


def _start(cfg, workdir, call):
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  progress = wd / "progress.txt"
  start = int(progress.read_text()) if progress.exists() else 0
  if os.environ.get("FAKE_LOG"):
    with open(os.environ["FAKE_LOG"], "a") as f:
      f.write(json.dumps({"name": cfg.wandb.name, "pid": os.getpid(), "start": start, "call": call}) + "\\n")
  nan = os.environ.get("FAKE_NAN_HIDDEN")
  if (nan and cfg.model.hidden == int(nan)) or os.environ.get("FAKE_NAN_NAME", "@") in cfg.wandb.name:
    return progress, start, "loss is nan at step 3"
  return progress, start, None


def _end(cfg):
  return min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps


def _validate(cfg, progress, done, report):
  if done % cfg.eval_every == 0 or done == _end(cfg):
    progress.write_text(str(done))
    if report is not None:
      mcc = final_score(cfg) * math.sqrt(done / cfg.steps)
      report(done, {"accuracy": 0.5 + final_score(cfg) / 2, "mcc": mcc, "macro_f1": 0.5})


def _result(cfg, t0):
  done = _end(cfg)
  mcc = final_score(cfg) * math.sqrt(done / cfg.steps)
  metrics = {"accuracy": 0.5 + final_score(cfg) / 2, "mcc": mcc, "macro_f1": 0.5, "loss": 1.0 - mcc}
  step_s = float(os.environ.get("FAKE_STEP_S", "0"))
  return {"validation": metrics, "test": {k: v - 0.01 for k, v in metrics.items()}, "metric": "mcc",
          "best_step": done, "steps": done, "train_time_s": time.time() - t0, "steps_per_s": 100.0,
          "tokens_per_s": 0.0, "num_params": memory.num_params(cfg.model),
          "timing": {"step_s": step_s, "compile_s": 0.0, "init_s": float(os.environ.get("FAKE_INIT_S", "0")),
                     "eval_each_s": 0.0}}


def _wandb(cfg, workdir, result):
  """The real trainer's wandb run (runlog.Logger), when the sweep asks for wandb."""
  if cfg.wandb.mode != "disabled":
    from embbert_jax import runlog
    log = runlog.Logger(Path(workdir), cfg, 0, "finetune")
    log.log(result["steps"], {"validation/mcc": result["validation"]["mcc"]})
    log.close({"best": result})
  return result


def train_and_evaluate(cfg, workdir, report=None):
  busy = os.environ.get("FAKE_BUSY")  # a marker file: the first call finds its workdir held elsewhere
  if busy and not os.path.exists(busy):
    open(busy, "w").close()
    from embbert_jax import files
    raise files.FolderBusy(f"{workdir} is in use by pid 1 on elsewhere")
  progress, start, nan = _start(cfg, workdir, cfg.wandb.name)
  if nan:
    raise TrainingDiverged(nan)
  t0 = time.time()
  for step in range(start, _end(cfg)):
    _step()
    _validate(cfg, progress, step + 1, report)
  return _wandb(cfg, workdir, _result(cfg, t0))


def train_group(cfgs, workdirs, report=None):
  if len({group_key(c) for c in cfgs}) != 1:
    raise ValueError("members of a group must share group_key")
  if os.environ.get("FAKE_GROUP_FAIL"):
    raise RuntimeError("out of memory in the group program")
  t0, call = time.time(), cfgs[0].wandb.name
  started = [_start(c, w, call) for c, w in zip(cfgs, workdirs)]
  out = [{"status": "failed", "error": nan} if nan else None for _, _, nan in started]
  for step in range(min(start for _, start, _ in started), _end(cfgs[0])):
    _step()
    if str(step) == os.environ.get("FAKE_INTERRUPT_AT"):
      raise KeyboardInterrupt
    for i, (c, (progress, start, _)) in enumerate(zip(cfgs, started)):
      if out[i] is None and step >= start:
        try:
          _validate(c, progress, step + 1, None if report is None else (lambda s, m, i=i: report(i, s, m)))
        except Pruned as e:
          out[i] = {"status": "pruned", "error": str(e), "pruned_at": step + 1}
  return [o or {**_wandb(c, w, _result(c, t0)), "status": "complete"} for o, c, w in zip(out, cfgs, workdirs)]


def precompile(cfg):
  if os.environ.get("FAKE_PRECOMPILE_FAIL"):
    raise RuntimeError("XLA ran out of memory")
  if os.environ.get("FAKE_PRECOMPILE_LOG"):
    with open(os.environ["FAKE_PRECOMPILE_LOG"], "a") as f:
      f.write(json.dumps({"model": cfg.model.to_dict(), "steps": cfg.steps, "stop_at": cfg.stop_at}) + "\\n")
  return {"programs": 3, "seconds": 0.5}


if os.environ.get("FAKE_NO_GROUP"):  # a trainer from before grouped training
  del train_group, group_key, max_group_size
'''


@pytest.fixture
def fake(tmp_path):
  path = tmp_path / "fake_trainer.py"
  path.write_text(FAKE_TRAINER)
  return path


def _settings(tmp_path, fake, **kw):
  s = sweep.get_config()
  s.update(dict(budget="2MB", space="tiny", max_trials=100, steps=8, wandb=False, out=str(tmp_path / "out"),
                trainer=str(fake), heartbeat_interval=1, grace_period=3, scheduler="fixed"))
  s.update(kw)
  return s


def _cli(tmp_path, fake, *extra, study="s", out="out", steps=8):
  return ["--budget", "2MB", "--space", "tiny", "--scheduler", "fixed", "--steps", str(steps), "--no-wandb",
          "--trainer", str(fake),
          "--study", study, "--out", str(tmp_path / out), "--heartbeat-interval", "1", "--grace-period", "3",
          *extra]


def _trials(url, study):
  storage = ledger_lib.open_storage(url)
  return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _worker(args, env_extra=None, **popen):
  env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
  return subprocess.Popen([sys.executable, "-m", "embbert_jax.sweep", *args], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


# ------------------------------------------------------------------------------------------- the space


def test_budget_filter_is_exact_and_matches_memory_estimate():
  space = space_lib.load("families")
  cands = space_lib.enumerate_space(space)
  for c in cands[::5]:
    m = c.model
    assert configs.config_hash(m) == c.hash
    for policy in ("fp32", "int8"):
      r = memory.estimate(m, policy)
      assert c.bytes[policy] == {"weight": r.weight_bytes, "activation": r.activation_bytes,
                                 "total": r.total_bytes}
    assert c.params == memory.num_params(m)
  totals = sorted(c.total("fp32") for c in cands)
  budget = totals[len(totals) // 2]  # a budget exactly at one config's size: it fits, one byte less not
  fit = space_lib.fits(cands, "fp32", budget)
  assert {c.hash for c in fit} == {c.hash for c in cands if c.total("fp32") <= budget}
  assert any(c.total("fp32") == budget for c in fit)
  assert len(space_lib.fits(cands, "fp32", budget - 1)) < len(fit)
  lo = space_lib.fits(cands, "fp32", budget, min_budget=totals[3])
  assert all(totals[3] <= c.total("fp32") <= budget for c in lo)


def test_model_of_equals_configs_presets():
  for preset in configs.PRESETS:
    assert space_lib.model_of(preset, hidden=64 if preset != "bert" else 80).to_dict() == \
        configs.get_preset(preset, hidden=64 if preset != "bert" else 80).to_dict()
  assert space_lib.model_of("embbert", conv_expansion=2).conv_expansion == 2.0


def test_dedupe_by_canonical_config_hash(tmp_path):
  f = tmp_path / "abl.py"
  f.write_text("import ml_collections\n"
               "def get_config():\n"
               "  s = ml_collections.ConfigDict()\n"
               "  s.families = dict(a=dict(preset='embbert', grid=dict(use_conv=(True, False),\n"
               "                                                         conv_kernel=(8, 16))),\n"
               "                    b=dict(preset='tiny', grid=dict(vocab_size=(8192,), num_layers=(4,), "
               "conv_kernel=(8, 32))))\n"
               "  return s\n")
  cands = space_lib.enumerate_space(space_lib.load(str(f)))
  # a: k=8, k=16, and conv off (k unused there: the two points are one network). b is tiny widened to the
  # headline's V and N: its k=8 point is a's k=8 network, its k=32 point is the headline model.
  hashes = [c.hash for c in cands]
  assert len(hashes) == len(set(hashes))
  assert sum(1 for c in cands if not c.model.use_conv) == 1
  assert len(cands) == 4  # a: k8, k16, no-conv; b: k32 (b's k8 is a's k8)


def test_spread_order_covers_the_memory_axis_first():
  cands = space_lib.fits(space_lib.enumerate_space(space_lib.load("default")), "fp32", 2_000_000)
  order = space_lib.spread_order(cands, "fp32")
  assert sorted(c.hash for c in order) == sorted(c.hash for c in cands)
  assert order == space_lib.spread_order(list(reversed(cands)), "fp32")  # deterministic
  sizes = [c.total("fp32") for c in order]
  assert sizes[0] == min(sizes) and sizes[1] == max(sizes)
  logs = sorted(math.log(s) for s in sizes[:9])
  span = math.log(max(sizes)) - math.log(min(sizes))
  assert max(b - a for a, b in zip(logs, logs[1:])) <= span / 4  # 9 trials leave no big hole


def test_grid_trains_the_spread_prefix_smallest_first():
  from embbert_jax import propose
  cands = space_lib.fits(space_lib.enumerate_space(space_lib.load("default")), "fp32", 2_000_000)
  order = space_lib.spread_order(cands, "fp32")
  taken, picks = set(), []
  for _ in range(7):
    c = propose.next_in_grid(order, taken, 5, "fp32")
    taken.add(c.hash)
    picks.append(c)
  assert {c.hash for c in picks[:5]} == {c.hash for c in order[:5]}
  assert [c.total("fp32") for c in picks[:5]] == sorted(c.total("fp32") for c in order[:5])
  assert [c.hash for c in picks[5:]] == [c.hash for c in order[5:7]]  # past the limit: spread order


def test_spaces_in_repo_load_and_span_the_range():
  cands = space_lib.enumerate_space(space_lib.load("default"))
  sizes = [c.total("fp32") for c in cands]
  assert min(sizes) < 300_000 and max(sizes) > 20_000_000  # well under 1 MB to tens of MB
  assert len(space_lib.enumerate_space(space_lib.load("tiny"))) == 8


# ------------------------------------------------------------------------------------------------ Pareto


def test_pareto_front_on_hand_made_points():
  pts = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.6), (3.0, 0.6), (4.0, 0.9), (0.5, 0.1), (4.0, 0.9),
         (5.0, float("nan"))]
  # (2,0.4) dominated by (1,0.5); (3,0.6) by (2,0.6); identical (4,0.9) points both stay.
  assert pareto.pareto_front(pts) == [5, 0, 2, 4, 6]
  assert pareto.pareto_front([]) == []


def test_hopeless_needs_enough_smaller_better_peers():
  es = configs.ml_collections.ConfigDict(dict(margin=0.02, min_better=2))
  peers = [(100, {10: 0.50}), (200, {10: 0.60}), (900, {10: 0.90}), (300, {5: 0.9})]
  assert sweep.hopeless(peers, 250, 10, 0.45, es)  # two no-larger peers beat it by > margin
  assert not sweep.hopeless(peers, 150, 10, 0.45, es)  # only one no-larger peer
  assert not sweep.hopeless(peers, 250, 10, 0.49, es)  # the 0.50 peer is within the margin


# ------------------------------------------------------------------------------------------- the engine


def test_sweep_runs_to_the_frontier_and_resumes_without_retraining(tmp_path, fake, monkeypatch, capsys):
  monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log.jsonl"))
  out = sweep.run_sweep(_settings(tmp_path, fake, study="s1"), log=lambda m: None)
  assert out["ran"] == 8 and out["finished"]
  rows = out["rows"]
  assert [r["status"] for r in rows] == ["complete"] * 8
  assert len({r["hash"] for r in rows}) == 8
  r = rows[0]
  for key in ("fp32_weight_bytes", "fp32_activation_bytes", "fp32_total_bytes", "int8_total_bytes", "params",
              "validation_mcc", "test_mcc", "train_time_s", "steps_per_s", "config", "worker", "peak_rss_mb"):
    assert r[key] not in (None, ""), key
  # The fake scores grow with size, so the frontier is every config whose score beats all smaller ones.
  front = out["front"]
  assert front and front == pareto.frontier_rows(rows)
  for f in ("trials.csv", "trials.jsonl", "frontier.png", "frontier.md", "sweep.json", "ledger.db"):
    assert (tmp_path / "out" / f).is_file(), f
  assert "Pareto frontier of sweep s1" in out["table"]
  lines = (tmp_path / "out" / "trials.jsonl").read_text().splitlines()
  assert len(lines) == 8 and json.loads(lines[0])["model"]["arch"] == "embbert"
  # Optuna's own readers (plots, optuna-dashboard) see named objectives and each trial's learning curve.
  study = optuna.load_study(study_name="s1", storage=f"sqlite:///{tmp_path / 'out' / 'ledger.db'}")
  assert study.metric_names == ["validation mcc", "fp32 memory bytes"]
  for t in study.trials:
    assert t.intermediate_values and t.intermediate_values == {int(k): v for k, v in t.user_attrs["curve"]}
  again = sweep.run_sweep(_settings(tmp_path, fake, study="s1"), log=lambda m: None)
  assert again["ran"] == 0 and len(again["rows"]) == 8
  assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 8  # nothing trained twice


def test_max_trials_is_the_study_total(tmp_path, fake):
  out = sweep.run_sweep(_settings(tmp_path, fake, study="s2", max_trials=3), log=lambda m: None)
  assert len(out["rows"]) == 3
  sizes = [r["fp32_total_bytes"] for r in out["rows"]]
  totals = sorted(c.total("fp32") for c in space_lib.enumerate_space(space_lib.load("tiny")))
  assert min(sizes) == totals[0] and max(sizes) == totals[-1]  # memory-spread order: both ends first
  more = sweep.run_sweep(_settings(tmp_path, fake, study="s2", max_trials=5), log=lambda m: None)
  assert more["ran"] == 2 and len(more["rows"]) == 5  # relaunch with a larger total extends the study


def test_nan_trials_are_failed_and_the_sweep_goes_on(tmp_path, fake, monkeypatch):
  monkeypatch.setenv("FAKE_NAN_HIDDEN", "16")
  out = sweep.run_sweep(_settings(tmp_path, fake, study="s3"), log=lambda m: None)
  status = {r["config"]: (r["status"], r["error"]) for r in out["rows"]}
  assert len(status) == 8
  failed = [c for c, (st, _) in status.items() if st == "failed"]
  assert sorted(failed) == sorted(c for c in status if " d16 " in c) and len(failed) == 4
  assert all("nan" in status[c][1] for c in failed)
  assert all(st == "complete" for c, (st, _) in status.items() if c not in failed)
  assert all(r["status"] == "complete" for r in out["front"])


def test_early_stopping_prunes_dominated_trials_only(tmp_path, fake, monkeypatch):
  monkeypatch.setenv("FAKE_BIGGER_IS_WORSE", "1")
  f = tmp_path / "es.py"
  f.write_text((space_lib.PACKAGE_SWEEPS / "tiny.py").read_text().replace("enabled=False", "enabled=True")
               .replace("margin=0.02", "margin=0.001").replace("min_better=2", "min_better=1"))
  out = sweep.run_sweep(_settings(tmp_path, fake, study="s4", space=str(f)), log=lambda m: None)
  rows = sorted(out["rows"], key=lambda r: r["fp32_total_bytes"])
  assert rows[0]["status"] == "complete"  # the smallest is never stopped by larger ones
  pruned = [r for r in rows if r["status"] == "pruned"]
  assert pruned and all(r["pruned_at"] < 8 and "hopeless" in r["error"] for r in pruned)
  assert {r["trial"] for r in out["front"]}.isdisjoint({r["trial"] for r in pruned})


# ----------------------------------------------------------------------------------- grouped training


def _calls(log):
  """The trainer calls of a FAKE_LOG: lists of the wandb names trained together, in order."""
  calls: dict[str, list[str]] = {}
  for line in log.read_text().splitlines():
    entry = json.loads(line)
    calls.setdefault(entry["call"], []).append(entry["name"])
  return list(calls.values())


def _by_trial(rows):
  return {r["trial"]: r for r in rows}


@pytest.fixture(scope="session")
def empty_ledger(tmp_path_factory):
  """A ledger file with the schema made (creating it costs more than a fake sweep): copy it to use it."""
  path = tmp_path_factory.mktemp("ledger") / "ledger.db"
  ledger_lib.open_storage(f"sqlite:///{path}").engine.dispose()
  return path


@pytest.fixture
def quick(tmp_path, fake, empty_ledger):
  """quick(study, log=..., **settings): run_sweep on one ledger per test (studies side by side), without
  the summary files (the plot too costs more than a fake sweep); returns "ran", "rows" and "front"."""
  shutil.copy(empty_ledger, tmp_path / "ledger.db")

  def run(study, log=lambda m: None, **kw):
    s = _settings(tmp_path, fake, study=study, storage=str(tmp_path / "ledger.db"), **kw)
    out = sweep.run_sweep(s, log=log, summary=False)
    rows = [pareto.trial_row(t, "fp32") for t in _trials(s.storage, study)]
    return {**out, "rows": rows, "front": pareto.frontier_rows(rows)}
  return run


def test_grouped_members_are_trials_of_their_own_trained_together(tmp_path, fake, empty_ledger, monkeypatch):
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  shutil.copy(empty_ledger, tmp_path / "ledger.db")
  out = sweep.run_sweep(_settings(tmp_path, fake, study="g1", space="tiny_grouped",
                                  storage=str(tmp_path / "ledger.db")), log=lambda m: None)
  rows = out["rows"]
  assert out["ran"] == 8 and [r["status"] for r in rows] == ["complete"] * 8
  assert len({r["hash"] for r in rows}) == 8 and len({r["shape"] for r in rows}) == 2
  assert {r["group_size"] for r in rows} == {4}
  # Each config's 4 members (2 learning rates x 2 seeds) were claimed and trained in one call.
  calls = _calls(log)
  assert [len(c) for c in calls] == [4, 4]
  for call in calls:
    assert len({r["shape"] for r in rows if r["trial"] in {int(n.split("-t")[1][:4]) for n in call}}) == 1
  knobs = sorted((r["train.learning_rate"], r["train.seed"]) for r in rows if r["shape"] == rows[0]["shape"])
  assert knobs == [(1e-3, 0), (1e-3, 1), (3e-3, 0), (3e-3, 1)]
  header = (tmp_path / "out" / "trials.csv").read_text().splitlines()[0].split(",")
  assert {"shape", "setting", "train.learning_rate", "train.seed", "pareto"} <= set(header)
  # A config's point: the mean over its seeds at its best learning rate (the fake's 3e-3).
  for point in out["front"]:
    members = [_by_trial(rows)[n] for n in point["members"]]
    assert {m["train.learning_rate"] for m in members} == {3e-3} and point["repeats"] == 2
    assert {m["train.seed"] for m in members} == {0, 1} and {m["shape"] for m in members} == {point["shape"]}
    assert point["value"] == pytest.approx(sum(m["value"] for m in members) / 2)
  assert "mean of 2 seeds" in out["table"] and "learning_rate=0.003" in out["table"]
  jsonl = (tmp_path / "out" / "trials.jsonl").read_text().splitlines()
  on_front = [json.loads(line)["pareto"] for line in jsonl]
  assert sum(on_front) == 2 * len(out["front"])


def test_max_trials_counts_member_trials_and_a_cut_config_is_finished_first(tmp_path, quick, monkeypatch):
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  out = quick("g2", space="tiny_grouped", max_trials=6)
  assert len(out["rows"]) == 6 and [len(c) for c in _calls(log)] == [4, 2]
  more = quick("g2", space="tiny_grouped", max_trials=8)
  assert more["ran"] == 2 and [len(c) for c in _calls(log)] == [4, 2, 2]
  assert len({r["hash"] for r in more["rows"]}) == 8 and len({r["shape"] for r in more["rows"]}) == 2


def test_grouped_member_failing_alone_and_group_failures(tmp_path, quick, monkeypatch):
  monkeypatch.setenv("FAKE_NAN_NAME", "-t0001-")  # trial 1: the first config's (lr 1e-3, seed 1) member
  out = quick("g3", space="tiny_grouped")
  rows = _by_trial(out["rows"])
  assert rows[1]["status"] == "failed" and "nan" in rows[1]["error"]
  assert all(r["status"] == "complete" for n, r in rows.items() if n != 1)
  # Its setting has no point (a recipe that diverged on a seed); its config's point is the other setting.
  assert len(out["front"]) >= 1 and all(not {0, 1} & set(p["members"]) for p in out["front"])
  # The group program itself failing: the members are requeued to train alone, and complete.
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  monkeypatch.delenv("FAKE_NAN_NAME")
  monkeypatch.setenv("FAKE_GROUP_FAIL", "1")
  lines = []
  out = quick("g4", lines.append, space="tiny_grouped", out=str(tmp_path / "o4"))
  assert [r["status"] for r in out["rows"]] == ["complete"] * 8 and [len(c) for c in _calls(log)] == [1] * 8
  assert sum("group training failed (RuntimeError: out of memory" in line for line in lines) == 2


def test_one_at_a_time_fallbacks_give_the_grouped_results(tmp_path, quick, monkeypatch):
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  grouped = quick("g5", space="tiny_grouped", out=str(tmp_path / "grouped"), max_trials=4)
  result = lambda out: ([(r["hash"], r["status"], r["value"]) for r in out["rows"]],
                        [(pareto.members_of(p), p["value"]) for p in out["front"]])
  for how, env, sizes in (("trainer without train_group", "FAKE_NO_GROUP", [1] * 4),
                          ("max_group_size 3", "FAKE_GROUP_MAX", [3, 1]), ("--no-group", "", [1] * 4)):
    log.unlink()
    with monkeypatch.context() as m:
      if env:
        m.setenv(env, "3")
      alone = quick(f"g5-{len(sizes)}-{env}", space="tiny_grouped", out=str(tmp_path / how), max_trials=4,
                    group=bool(env))
    assert [len(c) for c in _calls(log)] == sizes, how
    assert result(alone) == result(grouped), how


def _es_space(tmp_path, base, evals=None, **early_stop):
  f = tmp_path / f"es_{base}.py"
  text = (space_lib.PACKAGE_SWEEPS / f"{base}.py").read_text()
  text = text.replace("ConfigDict(dict(enabled=False, after=0.5, margin=0.02, min_better=2))",
                      f"ConfigDict({dict(enabled=True, **early_stop)!r})")
  assert "enabled': True" in text
  if evals:
    text = text.replace("space.evals = 2", f"space.evals = {evals}")
  f.write_text(text)
  return str(f)


@pytest.mark.parametrize("evals", [2, 4])
def test_early_stopping_per_member_compares_settings(tmp_path, quick, monkeypatch, evals):
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  monkeypatch.setenv("FAKE_BIGGER_IS_WORSE", "1")
  space = _es_space(tmp_path, "tiny_grouped", evals, after=0.5, margin=0.001, min_better=2)
  out = quick("g6", space=space)
  rows = sorted(out["rows"], key=lambda r: r["trial"])
  small, large = rows[:4], rows[4:]  # smallest config first (grid order)
  assert [r["status"] for r in small] == ["complete"] * 4  # seeds never stop each other
  # The larger config at lr 1e-3 is beaten by both settings of the smaller one: its setting is stopped at
  # step 4, decided by the mean of its two seeds when the second reports (trial 5); the first seed
  # (trial 4) stops at its next validation, at 6 (evals=4), or completes when that is the last one (evals
  # =2: it ran all its steps). At lr 3e-3 only one setting beats it: it trains on, in the same group call.
  assert [len(c) for c in _calls(log)] == [4, 4]
  by = {(r["train.learning_rate"], r["train.seed"]): r for r in large}
  assert by[1e-3, 1]["status"] == "pruned" and by[1e-3, 1]["pruned_at"] == 4
  assert "hopeless at step 4" in by[1e-3, 1]["error"]
  if evals == 4:
    assert by[1e-3, 0]["status"] == "pruned" and by[1e-3, 0]["pruned_at"] == 6
  else:
    assert by[1e-3, 0]["status"] == "complete"
  assert by[3e-3, 0]["status"] == by[3e-3, 1]["status"] == "complete"
  stopped = {by[1e-3, 0]["trial"], by[1e-3, 1]["trial"]}  # a setting with a pruned seed has no point
  assert out["front"] and all(not stopped & set(pareto.members_of(p)) for p in out["front"])


@pytest.mark.parametrize("space", ["tiny", "tiny_grouped"])
def test_a_decision_at_the_last_validation_never_prunes(tmp_path, quick, monkeypatch, space):
  """after=1.0: the only rung is the final validation; a trial that ran all its steps is complete even
  when dominated there."""
  monkeypatch.setenv("FAKE_BIGGER_IS_WORSE", "1")
  f = _es_space(tmp_path, space, after=1.0, margin=0.001, min_better=1)
  out = quick("g7", space=f)
  assert {r["status"] for r in out["rows"]} == {"complete"}


def test_a_stopped_group_requeues_every_member_and_resumes(tmp_path, quick, monkeypatch):
  """Ctrl-C mid-group (SIGTERM raises engine.Preempted the same way: test_sigterm_requeues_...)."""
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  monkeypatch.setenv("FAKE_INTERRUPT_AT", "10")
  with pytest.raises(KeyboardInterrupt):
    quick("g8", space="tiny_grouped", max_trials=4, steps=20)
  trials = _trials(f"sqlite:///{tmp_path / 'ledger.db'}", "g8")
  assert [t.state for t in trials] == [TrialState.WAITING] * 4  # preempted, not failed
  assert all(t.system_attrs["embbert:preempted"][0]["reason"].startswith("worker stopped") for t in trials)
  monkeypatch.delenv("FAKE_INTERRUPT_AT")
  out = quick("g8", space="tiny_grouped", max_trials=4, steps=20)
  assert out["ran"] == 4 and [r["status"] for r in out["rows"]] == ["complete"] * 4
  starts = [json.loads(line)["start"] for line in log.read_text().splitlines()]
  assert starts == [0] * 4 + [10] * 4  # all four claimed again together, each from its checkpoint


def test_a_trial_whose_workdir_is_held_elsewhere_waits_instead_of_failing(tmp_path, fake, monkeypatch):
  """A worker the ledger gave up on (no heartbeat) may still train the trial another worker claims: the
  workdir lock refuses the second one, which puts the trial back and takes it again later."""
  monkeypatch.setenv("FAKE_BUSY", str(tmp_path / "busy"))
  lines = []
  out = sweep.run_sweep(_settings(tmp_path, fake, study="busy", max_trials=1), log=lines.append)
  assert [r["status"] for r in out["rows"]] == ["complete"]
  [t] = _trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "busy")
  [reason] = [h["reason"] for h in t.system_attrs["embbert:preempted"]]
  assert reason.startswith("workdir in use: ") and reason.endswith("is in use by pid 1 on elsewhere"), reason
  assert any(line.endswith("is in use by pid 1 on elsewhere; back in the queue") for line in lines), lines


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_samplers_propose_only_new_fitting_configs(tmp_path, fake, strategy):
  s = _settings(tmp_path, fake, study=strategy, strategy=strategy, space="families", budget="1MB",
                max_trials=10, steps=4)
  out = sweep.run_sweep(s, log=lambda m: None)
  rows = out["rows"]
  assert len(rows) == 10 and len({r["hash"] for r in rows}) == 10
  assert all(r["fp32_total_bytes"] <= 1_000_000 for r in rows)
  assert all(r["status"] == "complete" for r in rows)


def test_report_redraws_from_the_ledger(tmp_path, fake, capsys):
  sweep.run_sweep(_settings(tmp_path, fake, study="s5", max_trials=4), log=lambda m: None)
  folder = tmp_path / "out"
  for f in ("trials.csv", "frontier.png"):
    (folder / f).unlink()
  before = (folder / "ledger.db").stat().st_size
  capsys.readouterr()
  assert sweep.main(["report", str(folder)]) == 0
  text = capsys.readouterr().out
  assert "Pareto frontier of sweep s5" in text and "| trial |" in text
  assert (folder / "trials.csv").is_file() and (folder / "frontier.png").is_file()
  assert len(_trials(f"sqlite:///{folder / 'ledger.db'}", "s5")) == 4
  assert sweep.main(["report", str(tmp_path / "nowhere")]) == 2
  del before


def _wandb_records(run_dir: Path):
  """The records of an offline wandb run (its run-<id>.wandb: a LevelDB-style log of protobuf records)."""
  import struct
  from wandb.proto import wandb_internal_pb2 as pb
  [path] = run_dir.glob("run-*.wandb")
  data, pos, block, buf = path.read_bytes(), 7, 32768, b""  # a 7-byte file header, then 32 KiB blocks
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a record header is padding
      pos += block - pos % block
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])  # crc, length, full/first/middle/last
    buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
    if kind in (1, 4):
      rec = pb.Record()
      rec.ParseFromString(buf)
      yield rec
      buf = b""


def _finished_wandb_records(run_dir: Path, timeout_s: float = 60.0) -> list:
  """The records of an offline run once its exit record is on disk: wandb-core writes the file from its own
  process and may still be flushing it when run.finish() returns (CI once read a run with no records)."""
  from google.protobuf.message import DecodeError
  deadline = time.time() + timeout_s
  while True:
    try:
      recs = list(_wandb_records(run_dir))
    except (DecodeError, ValueError):  # a record cut mid-write, or the file not there yet
      recs = []
    if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.time() > deadline:
      return recs
    time.sleep(0.2)


def test_wandb_runs_of_a_sweep_share_its_folder_with_memory_job_type_and_tags(tmp_path, fake, monkeypatch):
  """Every trial's wandb run and the summary run are offline runs in <out>/wandb (one `wandb sync
  <out>/wandb` finds them all); a trial's run has job_type trial, tags (kind, task, the space family, the
  policy), and its memory under every policy
  and its parameter count (as the ledger records them) in its config and summary."""
  monkeypatch.setenv("WANDB_MODE", "offline")
  for var in ("WANDB_DIR", "WANDB_JOB_TYPE", "WANDB_TAGS"):
    monkeypatch.delenv(var, raising=False)
  out = sweep.run_sweep(_settings(tmp_path, fake, study="s6", max_trials=2, wandb=True), log=lambda m: None)
  assert out["finished"] and not {"WANDB_DIR", "WANDB_JOB_TYPE", "WANDB_TAGS"} & set(os.environ)
  runs = sorted((tmp_path / "out" / "wandb").glob("offline-run-*"))
  assert len(runs) == 3
  assert not list((tmp_path / "out" / "trials").rglob("offline-run-*"))  # none left in the trial folders
  by_name = {}
  for run in runs:
    recs = _finished_wandb_records(run)
    [r] = [x.run for x in recs if x.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in r.config.update}
    summary = {i.key: json.loads(i.value_json) for x in recs if x.WhichOneof("record_type") == "summary"
               for i in x.summary.update if i.key}
    by_name[r.display_name] = (r.job_type, list(r.tags), r.run_group, config, summary)
  assert by_name.pop("s6-summary")[0] == "sweep-summary"
  trials = {t.user_attrs["hash"]: t for t in _trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "s6")}
  assert len(by_name) == 2
  for name, (job_type, tags, group, config, summary) in by_name.items():
    t = trials[next(h for h in trials if name.endswith(h[:6]))]
    assert job_type == "trial" and group == "s6" and tags == ["train", "rt_polarity", "embbert", "fp32"], tags
    for policy, b in t.user_attrs["bytes"].items():
      assert config["memory"][policy] == {f"{k}_bytes": v for k, v in b.items()}
      assert summary[f"memory/{policy}/total_bytes"] == b["total"]
    assert config["params"] == summary["params"] == t.user_attrs["params"]


# ------------------------------------------------------------------------------------------- bad input


def _space_file(tmp_path, body):
  f = tmp_path / "space.py"
  f.write_text(body)
  return str(f)


BAD = {
    "budget below the smallest config": (["--budget", "1kB"], "the smallest is embbert V512 L32 d16"),
    "unreadable budget": (["--budget", "lots"], "cannot read memory budget"),
    "unknown space": (["--space", "nope"], "unknown search space 'nope'"),
    "malformed space file": (["--space", "SYNTAX"], "cannot load search space"),
    "space without families": (["--space", "EMPTY"], "non-empty 'families'"),
    "unknown preset": (["--space", "PRESET"], "unknown preset 'huge'"),
    "unknown model field": (["--space", "FIELD"], "unknown model field 'hiden'"),
    "unknown training field": (["--space", "TRAIN"], "no field 'learning_rat'"),
    "unreachable storage": (["--storage", "postgresql+psycopg2://u:secret@127.0.0.1:9/x"],
                            "cannot open the ledger postgresql+psycopg2://u:***@127.0.0.1:9/x"),
    "bad workers": (["--workers", "many"], "--workers must be"),
}
_HEAD = "import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict(dict("
SPACES = {
    "SYNTAX": "def get_config(:\n",
    "EMPTY": "import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict()\n",
    "PRESET": _HEAD + "families=dict(a=dict(preset='huge', grid=dict(hidden=(8,))))))\n",
    "FIELD": _HEAD + "families=dict(a=dict(preset='nano', grid=dict(hiden=(8,))))))\n",
    "TRAIN": _HEAD + "families=dict(a=dict(preset='nano', grid=dict(hidden=(8,)))), "
                     "train=dict(learning_rat=1e-3)))\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, fake, capsys, case):
  args, expected = BAD[case]
  args = [SPACES.get(a) and _space_file(tmp_path, SPACES[a]) or a for a in args]
  base = ["--budget", "2MB", "--space", "tiny", "--no-wandb", "--trainer", str(fake),
          "--out", str(tmp_path / "o")]
  rc = sweep.main(base + args)
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err, err
  assert expected in err, err
  assert "secret" not in err
  assert not (tmp_path / "o" / "ledger.db").exists()  # validated before the ledger is touched


def test_dataset_that_cannot_be_fetched(tmp_path, capsys):
  rc = sweep.main(["--budget", "2MB", "--space", "tiny", "--no-wandb", "--task", str(tmp_path / "none.jsonl"),
                   "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.count("\n") == 0 and "file not found" in err, err
  assert not (tmp_path / "o").exists()


def test_changed_settings_do_not_touch_an_existing_study(tmp_path, fake, capsys):
  assert sweep.main(_cli(tmp_path, fake, "--max-trials", "2", study="s7")) == 0
  capsys.readouterr()
  rc = sweep.main(_cli(tmp_path, fake, "--max-trials", "4", study="s7", steps=9))
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "was started with steps=8 (now 9)" in err and err.count("\n") == 0, err
  assert len(_trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "s7")) == 2


# ---------------------------------------------------------------------------------- workers and ledgers


def _wait_for(pred, timeout=60.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    got = pred()
    if got:
      return got
    time.sleep(0.2)
  raise AssertionError("timed out")


def _running_mid_trial(db):
  """Trial numbers that are RUNNING and have validated once (read straight from the SQLite file: fast)."""
  try:
    with sqlite3.connect(db, timeout=30) as conn:
      return [n for (n,) in conn.execute(
          "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
          "WHERE t.state = 'RUNNING' AND a.key = 'curve'")]
  except sqlite3.Error:  # the ledger may not exist yet
    return []


def _check_complete(trials, n):
  assert len(trials) == n
  assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
  assert len({t.user_attrs["hash"] for t in trials}) == n


def test_two_concurrent_workers_share_one_sqlite_ledger(tmp_path, fake):
  log = tmp_path / "log.jsonl"
  env = {"FAKE_STEP_S": "0.1", "FAKE_LOG": str(log)}
  procs = [_worker(_cli(tmp_path, fake, "--no-summary"), env) for _ in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  trials = _trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "s")
  _check_complete(trials, len(space_lib.enumerate_space(space_lib.load("tiny"))))
  assert len({t.system_attrs["embbert:worker"] for t in trials}) == 2  # both took part
  starts = [json.loads(line)["name"] for line in log.read_text().splitlines()]
  assert len(starts) == len(set(starts)) == 8  # no config trained twice


def test_killed_worker_trial_is_retried_and_resumed(tmp_path, fake):
  db, log = tmp_path / "out" / "ledger.db", tmp_path / "log.jsonl"
  url = f"sqlite:///{db}"
  env = {"FAKE_STEP_S": "0.1", "FAKE_LOG": str(log)}
  # 20 steps, validated at 10 and 20: killed after step 10, a trial has at least a second to go.
  args = _cli(tmp_path, fake, "--max-trials", "3", "--no-summary", steps=20)
  a = _worker(args, env)
  victim = _wait_for(lambda: _running_mid_trial(db))[0]
  a.send_signal(signal.SIGKILL)
  a.wait(timeout=30)
  assert _trials(url, "s")[victim].state == TrialState.RUNNING  # what SIGKILL leaves behind
  b = _worker(args, env)
  out, err = b.communicate(timeout=240)
  assert b.returncode == 0, err
  trials = _trials(url, "s")
  _check_complete(trials, 3)
  t = trials[victim]
  assert t.system_attrs["embbert:attempts"] == 2 and len(t.system_attrs["embbert:preempted"]) == 1
  assert "heartbeats" in err
  starts = [json.loads(line) for line in log.read_text().splitlines()]
  mine = [s for s in starts if s["name"].endswith(f"t{victim:04d}-{t.user_attrs['hash'][:6]}")]
  assert len(mine) == 2 and mine[1]["start"] > 0  # retried once, from its checkpoint


def test_sigterm_requeues_the_trial_instead_of_failing_it(tmp_path, fake):
  db = tmp_path / "out" / "ledger.db"
  url = f"sqlite:///{db}"
  args = _cli(tmp_path, fake, "--max-trials", "2", "--no-summary", steps=20)
  a = _worker(args, {"FAKE_STEP_S": "0.1"})
  victim = _wait_for(lambda: _running_mid_trial(db))[0]
  a.send_signal(signal.SIGTERM)
  _, err = a.communicate(timeout=60)
  assert a.returncode == 130 and "back in the queue" in err, err
  t = _trials(url, "s")[victim]
  assert t.state == TrialState.WAITING  # a preemption, not a failure
  assert t.system_attrs["embbert:preempted"][0]["reason"].startswith("worker stopped")
  b = _worker(args, {"FAKE_STEP_S": "0.01"})
  assert b.wait(timeout=120) == 0
  _check_complete(_trials(url, "s"), 2)


def test_sigterm_is_never_lost_20_tries(tmp_path, fake):
  """SIGTERM at 20 random moments of a worker's life after its handler is set (before, while and after
  claiming the trial, mostly mid-step, with every step inside a garbage-collector callback where a raising
  handler's exception is dropped): every time the worker exits 130 and the trial is back in the queue."""
  import random
  db = tmp_path / "out" / "ledger.db"
  space = _space_file(tmp_path, "from embbert_jax.sweeps.tiny import get_config as tiny\n"
                                "def get_config():\n  s = tiny()\n  s.evals = 1000\n  return s\n")
  args = _cli(tmp_path, fake, "--max-trials", "1", "--no-summary", "--space", space, steps=2000)
  env = {"FAKE_STEP_S": "0.05", "FAKE_STEP_IN_GC": "1"}
  rng = random.Random(0)
  for i in range(20):
    p = _worker(args, env)
    for line in p.stderr:  # the worker's first line: its handlers are set
      if "(worker " in line:
        break
    time.sleep(rng.uniform(0.0, 1.2))
    p.send_signal(signal.SIGTERM)
    try:
      _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # the signal was lost: the worker trains on
      p.kill()
      _, err = p.communicate()
    assert p.returncode == 130 and "back in the queue" in err, (i, p.returncode, err)
    with sqlite3.connect(db, timeout=30) as conn:
      assert conn.execute("SELECT state FROM trials").fetchall() == [("WAITING",)], (i, err)
  [t] = _trials(f"sqlite:///{db}", "s")
  assert t.user_attrs["curve"] and len(t.system_attrs["embbert:preempted"]) >= 10  # mostly stopped mid-trial


def test_workers_flag_launches_several_workers(tmp_path, fake):
  p = _worker(_cli(tmp_path, fake, "--workers", "2"), {"FAKE_STEP_S": "0.05"})
  out, err = p.communicate(timeout=240)
  assert p.returncode == 0, err
  assert "2 workers started" in err and "Pareto frontier of sweep s" in out
  trials = _trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "s")
  _check_complete(trials, 8)


@pytest.mark.parametrize("space", ["tiny", "tiny_grouped"])
def test_postgres_ledger_with_two_workers(tmp_path, fake, space):
  url = os.environ.get("EMBBERT_TEST_POSTGRES_URL")
  if not url:
    pytest.skip("no PostgreSQL server: set EMBBERT_TEST_POSTGRES_URL (.ci/services.sh starts one)")
  pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2-binary is not installed")
  study = f"pg-{os.getpid()}-{int(time.time())}"
  args = _cli(tmp_path, fake, "--storage", url, "--no-summary", "--space", space, study=study)
  procs = [_worker(args, {"FAKE_STEP_S": "0.1"}) for _ in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  try:
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(url, study)
    _check_complete(trials, 8)
    assert len({t.system_attrs["embbert:worker"] for t in trials}) == 2
    assert sweep.main(["report", study, "--storage", url, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "frontier.png").is_file()
  finally:
    optuna.delete_study(study_name=study, storage=url)


@pytest.mark.slow
def test_real_trainer_end_to_end(tmp_path):
  """Two tiny configs trained for real on rt_polarity (data from the cache or PyPI)."""
  s = sweep.get_config()
  s.update(dict(budget="2MB", space="tiny", max_trials=2, steps=16, wandb=False, out=str(tmp_path / "out")))
  out = sweep.run_sweep(s, log=lambda m: None)
  assert [r["status"] for r in out["rows"]] == ["complete", "complete"], out["rows"]
  for r in out["rows"]:
    assert -1 <= r["validation_mcc"] <= 1 and r["steps_per_s"] > 0 and r["train_time_s"] > 0
  assert (tmp_path / "out" / "frontier.png").is_file() and out["front"]


@pytest.mark.slow
def test_real_trainer_grouped_end_to_end(tmp_path):
  """The tiny grouped space trained for real: each config's 4 members (2 learning rates x 2 seeds) in one
  train.train_group program, every member a complete trial of its own, a frontier of seed means."""
  from embbert_jax import train
  if not hasattr(train, "train_group"):
    pytest.skip("train.train_group is not there")
  lines = []
  s = sweep.get_config()
  s.update(dict(budget="2MB", space="tiny_grouped", steps=8, wandb=False, out=str(tmp_path / "out"),
                scheduler="fixed"))  # a train_grid needs the fixed scheduler
  out = sweep.run_sweep(s, log=lines.append)
  assert [r["status"] for r in out["rows"]] == ["complete"] * 8, out["rows"]
  assert sum(" together start: " in line for line in lines) == 2, lines
  for r in out["rows"]:
    assert -1 <= r["validation_mcc"] <= 1 and r["steps_per_s"] > 0
  assert out["front"] and all(p["repeats"] == 2 for p in out["front"])
  # Members differ: two seeds of one setting do not train to the same numbers.
  by_setting = {}
  for r in out["rows"]:
    by_setting.setdefault((r["shape"], r["setting"]), []).append(r["validation_accuracy"])
  assert any(len(set(v)) > 1 for v in by_setting.values())


def test_shipped_spaces_are_found_before_the_working_directory(tmp_path, monkeypatch):
  # A file that happens to sit in ./sweeps must not replace a space of the package of the same name
  # (it runs as code); a name only there is still found, and a path is taken as given.
  monkeypatch.chdir(tmp_path)
  (tmp_path / "sweeps").mkdir()
  (tmp_path / "sweeps" / "default.py").write_text("raise SystemExit('not this one')\n")
  (tmp_path / "sweeps" / "mine.py").write_text((space_lib.PACKAGE_SWEEPS / "tiny.py").read_text())
  assert space_lib.resolve("default") == space_lib.PACKAGE_SWEEPS / "default.py"
  assert space_lib.resolve("mine") == Path("sweeps") / "mine.py"
  assert space_lib.load("sweeps/mine.py").name == "mine"
  with pytest.raises(space_lib.SpaceError, match="known: .*default.*mine"):
    space_lib.resolve("nope")


def test_opening_a_fresh_ledger_retries_a_wal_switch_that_sqlite_refused_at_once(tmp_path, monkeypatch):
  """Two workers opening a new SQLite ledger together: SQLite may refuse the first WAL switch with
  "database is locked" at once (no busy wait), which ended one worker of a CI run with exit 2. The switch
  is retried like every other ledger call."""
  real, refused = ledger_lib._enable_wal, []

  def refused_once(path):
    if not refused:
      refused.append(path)
      raise sqlite3.OperationalError("database is locked")
    real(path)

  monkeypatch.setattr(ledger_lib, "_enable_wal", refused_once)
  monkeypatch.setattr(ledger_lib, "RETRY_FOR_S", 5.0)
  storage = ledger_lib.open_storage(f"sqlite:///{tmp_path / 'ledger.db'}")
  storage.engine.dispose()
  assert refused
  with sqlite3.connect(tmp_path / "ledger.db") as conn:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_time_line_splits_trainer_calls_and_leaves_the_rest_to_data_and_setup():
  from embbert_jax import pareto
  rows = [dict(time_compile_s=60.0, time_init_s=30.0, time_train_s=120.0, time_eval_s=30.0,
               time_checkpoint_s=6.0, time_wall_s=300.0, finished_at=None),
          dict(time_compile_s=60.0, time_init_s=6.0, time_train_s=60.0, time_eval_s=0.0,
               time_checkpoint_s=0.0, time_wall_s=138.0, finished_at=None)]
  text = pareto.time_line(rows, {})
  assert text == ("2 trials, 7.3 min in trainer calls: compile 2.0, initial params (mostly their program's "
                  "compile) 0.6, steps 3.0, evaluation 0.5, checkpoints 0.1, data and setup 1.1 min")
  old = [{k: v for k, v in r.items() if k != "time_init_s"} for r in rows]  # a ledger from before init_s
  assert "initial params" not in pareto.time_line(old, {}) and "data and setup 1.7 min" in pareto.time_line(old, {})
  peaks = [dict(r, peak_rss_mb=mb) for r, mb in zip(rows, (1536, 2048))]  # each worker's high-water mark
  assert pareto.time_line(peaks, {}).endswith("; peak resident memory of a worker 2.00 GB")


def test_freed_heap_goes_back_to_the_os():
  import numpy as np
  from embbert_jax import hostmem
  assert 0 < hostmem.rss_mb() <= hostmem.peak_rss_mb() + 1
  # 190 MB of 64 kB chunks with every other one kept: glibc keeps the freed half in its arenas (free()
  # alone cannot shrink a fragmented heap); trim_heap hands those pages back.
  chunks = [np.ones(8192) for _ in range(3000)]
  del chunks[::2]
  assert hostmem.heap_free_mb() > 50  # the freed half sits in malloc's arenas ...
  held = hostmem.rss_mb()
  assert hostmem.trim_heap() is True  # glibc, as on every machine this runs on
  assert hostmem.rss_mb() < held - 50
