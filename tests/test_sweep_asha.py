"""The multi-fidelity sweep (scheduler.py on the ledger): promotion by Pareto rank inside memory bands,
resumption across rungs, the top-rung-only frontier with final seeds, the time budget, two workers that
never promote a trial twice, and a real-trainer two-rung sweep. The fake trainer is test_sweep's.
"""

import json
import os
import time
import types

import optuna
import pytest
from optuna.trial import TrialState

from embbert_jax import asha, configs, pareto, scheduler, sweep
from embbert_jax import ledger as ledger_lib
from test_sweep import _cli, _trials, _worker, fake  # noqa: F401  (fake: the fake trainer's fixture)


def _settings(tmp_path, fake, **kw):
  s = sweep.get_config()
  s.update(dict(budget="2MB", space="tiny", scheduler="asha", time_budget="", steps=12, rungs=3, eta=2, final_seeds=2,
                max_trials=8, wandb=False, out=str(tmp_path / "out"), trainer=str(fake), heartbeat_interval=1,
                grace_period=3, study="a"))
  s.update(kw)
  return s


def _check_asha_ledger(trials, plan: asha.Plan):
  """What must hold of any finished multi-fidelity study."""
  search = [t for t in trials if t.user_attrs.get("final_of") is None]
  by_cell: dict[tuple[int, int], list] = {}
  for t in search:
    rungs = [r[0] for r in t.user_attrs.get("rungs", [])]
    assert rungs == list(range(len(rungs))), (t.number, rungs)  # each rung once, in order: no double work
    for r in t.user_attrs["rungs"]:
      assert r[1] == plan.rung_steps[r[0]]  # paused exactly at its rung's steps
      by_cell.setdefault((plan.band(t.user_attrs["bytes_total"]), r[0]), []).append(t)
    if t.state == TrialState.COMPLETE:
      assert rungs[-1] == plan.top
    else:
      assert t.state == TrialState.PRUNED and "not promoted past rung" in t.user_attrs["error"]
  for (band, rung), got in by_cell.items():
    if rung == 0:
      continue
    below = len(by_cell.get((band, rung - 1), []))
    # The quota floor(n / eta); close-out may add one to a band's top rung that the quota left empty.
    assert len(got) <= below // plan.eta + (1 if rung == plan.top else 0), (band, rung, len(got), below)
  return search


def test_asha_promotes_within_bands_and_draws_the_frontier_from_the_top_rung(tmp_path, fake, monkeypatch):
  log = tmp_path / "log.jsonl"
  monkeypatch.setenv("FAKE_LOG", str(log))
  lines = []
  out = sweep.run_sweep(_settings(tmp_path, fake), log=lines.append)
  led_trials = _trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "a")
  state = ledger_lib.Ledger(ledger_lib.open_storage(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}"), "a",
                            ["maximize", "minimize"]).study_attrs()["asha"]
  plan = asha.Plan.from_dict(state["plan"])
  assert plan.rung_steps == (3, 6, 12) and plan.bands == 2
  search = _check_asha_ledger(led_trials, plan)
  assert len(search) == 8
  top = [t for t in search if t.state == TrialState.COMPLETE]
  assert {plan.band(t.user_attrs["bytes_total"]) for t in top} == {0, 1}  # each band fills its own top
  # A small config is never eliminated by a big one: every band's top holds its band's best rung-0 loss...
  for t in top:
    band = plan.band(t.user_attrs["bytes_total"])
    mates = [s for s in search if plan.band(s.user_attrs["bytes_total"]) == band]
    best0 = min(mates, key=lambda s: s.user_attrs["rungs"][0][3])
    assert t.user_attrs["rungs"][0][3] <= best0.user_attrs["rungs"][0][3] + state["eps"] + 1e-9
  # ... and each promoted trial resumed from where it paused (the fake's progress file), never from 0.
  calls = [json.loads(x) for x in log.read_text().splitlines()]
  for t in top:
    starts = [c["start"] for c in calls if c["name"].endswith(f"-t{t.number:04d}-{t.user_attrs['hash'][:6]}")]
    assert starts == [0, 3, 6], (t.number, starts)
  # Final seeds: one more seed for the best of each band, straight to the top; the frontier is their mean.
  finals = [t for t in led_trials if t.user_attrs.get("final_of") is not None]
  assert sorted(t.user_attrs["final_of"] for t in finals) == sorted(t.number for t in top)
  assert all(t.state == TrialState.COMPLETE and t.user_attrs["train"] == {"seed": 1} for t in finals)
  front = out["front"]
  assert front and all(p.get("repeats") == 2 for p in front)
  on_front = {n for p in front for n in pareto.members_of(p)}
  assert on_front <= {t.number for t in top + finals}
  assert any("promoted to rung 1" in x for x in lines) and any("multi-fidelity plan" in x for x in lines)
  # Resuming a finished study trains nothing more.
  calls_before = len(log.read_text().splitlines())
  sweep.run_sweep(_settings(tmp_path, fake), log=lambda m: None)
  assert len(log.read_text().splitlines()) == calls_before


def test_the_worker_compiles_the_config_it_starts_next_ahead_and_survives_a_failed_compile(
    tmp_path, fake, monkeypatch):
  pre = tmp_path / "precompiled.jsonl"
  monkeypatch.setenv("FAKE_PRECOMPILE_LOG", str(pre))
  monkeypatch.setenv("FAKE_STEP_S", "0.01")  # the compile-ahead thread (instant here) ends within a trial
  lines = []
  sweep.run_sweep(_settings(tmp_path, fake, compile_ahead="on"), log=lines.append)
  trials = sorted(_trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "a"), key=lambda t: t.number)
  starts = [configs.ModelConfig.from_dict(t.user_attrs["model"]) for t in trials
            if t.user_attrs.get("final_of") is None]
  got = [json.loads(x) for x in pre.read_text().splitlines()]
  ahead = [configs.ModelConfig.from_dict(g["model"]) for g in got]
  # The guess made while trial k trains is the config started next: every compiled one was started after
  # the first trial, in start order, none twice; with the rung-0 call's horizon and pause.
  assert len(ahead) >= len(starts) - 2 and len(set(ahead)) == len(ahead)
  assert ahead == [m for m in starts[1:] if m in ahead]
  assert all(g["steps"] == 12 and g["stop_at"] == 3 for g in got)
  said = f"compiled ahead on a second thread: {3 * len(ahead)} programs of {len(ahead)} configs"
  assert any(said in x for x in lines) and said in (tmp_path / "out" / "frontier.md").read_text()
  # A compile that fails costs the sweep nothing but a line.
  monkeypatch.setenv("FAKE_PRECOMPILE_FAIL", "1")
  lines = []
  out = sweep.run_sweep(_settings(tmp_path, fake, study="b", out=str(tmp_path / "b"), compile_ahead="on"),
                        log=lines.append, summary=False)
  assert out["ran"] > 8 and any("ahead failed (RuntimeError: XLA ran out of memory)" in x for x in lines)
  # Off, and auto on a CPU (the tests' JAX): none.
  monkeypatch.delenv("FAKE_PRECOMPILE_FAIL")
  for mode in ("off", "auto"):
    pre.unlink(missing_ok=True)
    sweep.run_sweep(_settings(tmp_path, fake, study=mode, out=str(tmp_path / mode), compile_ahead=mode),
                    log=lambda m: None, summary=False)
    assert not pre.exists()


def test_time_budget_plans_the_sweep_and_ends_within_it(tmp_path, fake, monkeypatch):
  monkeypatch.setenv("FAKE_STEP_S", "0.02")
  monkeypatch.setenv("FAKE_INIT_S", "0.4")  # reported, not spent: the planner prices it into a new config
  lines = []
  t0 = time.time()
  # The summary (plot, reference baselines that may fetch data) is not the sweep's training: timed apart.
  sweep.run_sweep(_settings(tmp_path, fake, time_budget="20s", max_trials=0, steps=60, study="tb",
                            space="default"), log=lines.append, summary=False)
  wall = time.time() - t0
  # Within 10 % of the budget both ways: the search goes on while the measured final phase still fits.
  assert 20 * 0.8 <= wall <= 20 * 1.1, wall
  plan_line = next(x for x in lines if x.startswith("multi-fidelity plan"))
  assert "ends by" in plan_line and "compile 0.4 s (initial params 0.4 s)" in "\n".join(lines)
  trials = _trials(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "tb")
  assert any(t.state == TrialState.COMPLETE for t in trials), lines  # the top rung reached in time
  led = ledger_lib.Ledger(ledger_lib.open_storage(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}"), "tb",
                          ["maximize", "minimize"])
  _check_asha_ledger(trials, asha.Plan.from_dict(led.study_attrs()["asha"]["plan"]))


def test_search_ends_when_the_picks_own_measured_runs_still_fit():
  """The final phase is priced at each pick's own measured wall time, not every pick at the slowest
  top-rung trial's: a sweep whose picks were 15-35 s runs priced at a 150 s one ended at 81 % of its
  budget."""
  plan = asha.Plan(eta=3, rung_steps=(10, 30, 90), band_edges=(100_000, 2_000_000), n0=9, final_seeds=3)

  def top(number, nbytes, metric, wall):
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[metric, nbytes], user_attrs=dict(
            rungs=[[0, 10], [1, 30], [2, 90]], bytes_total=nbytes, time_spent=dict(wall_s=wall)))

  # Trial 0: small, good and fast (the pick); trial 1: big, worse and slow (dominated: no seeds).
  search = [top(0, 200_000, 0.70, 20.0), top(1, 1_500_000, 0.60, 150.0)]
  for n, t in enumerate(search):
    t.number = n
  recs = [asha.Record(t.number, 2, t.user_attrs["bytes_total"], t.values[0]) for t in search]
  state = dict(deadline=1000.0, started=0.0, eps=0.0, search_until=500.0)
  assert [r.trial for r in asha.final_picks(plan, recs)] == [0]
  # Margin 5 % of 1000 s, then two more seeds of trial 0 at its own 20 s each.
  assert scheduler.search_until(state, plan, search, recs) == pytest.approx(1000 - 50 - 2 * 20)
  # Before any top-rung run is measured, the plan's own estimate stands.
  assert scheduler.search_until(state, plan, [], []) == 500.0
  # The two seeds train as one group: one run of trial 0's 20 s, not two (seed_runs).
  assert scheduler.search_until(state, plan, search, recs, lambda t: 1) == pytest.approx(1000 - 50 - 20)
  # Two undominated picks (trial 1 now better) on two workers: their seeds train side by side, and the
  # final phase is never shorter than its longest item (trial 1's 150 s).
  search[1].values = [0.80, 1_500_000]
  recs = [asha.Record(t.number, 2, t.user_attrs["bytes_total"], t.values[0]) for t in search]
  assert [r.trial for r in asha.final_picks(plan, recs)] == [1, 0]
  assert scheduler.search_until(state, plan, search, recs, lambda t: 1) == pytest.approx(1000 - 50 - 170)
  two = dict(state, workers=2)
  assert scheduler.search_until(two, plan, search, recs, lambda t: 1) == pytest.approx(1000 - 50 - 150)


def test_final_seeds_are_priced_as_the_groups_they_train_in(monkeypatch):
  """A pick's final_seeds - 1 extra seeds wait together and train as groups of the trainer's group size
  (worker._claim_group): the final phase is priced in those runs. Priced one seed after another, a
  45-minute sweep ended its search 2.4 min early and finished at 84 % of its budget."""
  monkeypatch.setattr(scheduler, "trial_config", lambda sw, t: None)

  def runs(final_seeds, width, group=True, train_group=True):
    trainer = types.SimpleNamespace(max_group_size=lambda cfg: width)
    if train_group:
      trainer.train_group = lambda *a: None
    sw = types.SimpleNamespace(trainer=trainer, settings=types.SimpleNamespace(group=group))
    plan = asha.Plan(eta=3, rung_steps=(10, 30), band_edges=(1, 2), n0=9, final_seeds=final_seeds)
    return scheduler.seed_runs(sw, plan, None)

  assert runs(3, 64) == 1 and runs(6, 2) == 3 and runs(3, 1) == 2 and runs(1, 64) == 0
  assert runs(3, 64, group=False) == 2 and runs(3, 64, train_group=False) == 2  # --no-group; no train_group


def test_time_budget_that_cannot_fit_drops_work_and_says_so(tmp_path, fake, monkeypatch):
  monkeypatch.setenv("FAKE_STEP_S", "0.05")
  lines = []
  sweep.run_sweep(_settings(tmp_path, fake, time_budget="6s", max_trials=0, steps=60, study="tight"),
                  log=lines.append)
  plan_line = next(x for x in lines if x.startswith("multi-fidelity plan"))
  assert "to fit the budget:" in plan_line, plan_line


def test_a_time_budget_the_calibration_uses_up_is_one_line(tmp_path, fake, monkeypatch):
  """`--time-budget 45` is 45 seconds; a calibration that takes them all was a ValueError traceback."""
  monkeypatch.setenv("FAKE_STEP_S", "0.05")
  monkeypatch.setattr(scheduler.asha, "parse_duration", lambda text: 0.5)  # spent before the plan is made
  with pytest.raises(asha.PlanError, match=r"time budget \(0 s\) is too short.*all of it"):
    sweep.run_sweep(_settings(tmp_path, fake, time_budget="45", max_trials=0, steps=60, study="short"),
                    log=lambda m: None, summary=False)
  proc = _worker(_cli(tmp_path, fake, "--scheduler", "asha", "--time-budget", "0.001", "--no-summary",
                      study="short-cli", steps=60), {"FAKE_STEP_S": "0.05"})
  _, err = proc.communicate(timeout=300)
  last = err.strip().splitlines()[-1]  # after the sweep's own [sweep] lines
  assert proc.returncode == 2 and "Traceback" not in err and last.startswith("error: the time budget (0 s) is too short"), err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_promote_concurrently_without_double_promotion(tmp_path, fake, backend):
  log = tmp_path / "log.jsonl"
  study, url = f"two-{os.getpid()}-{int(time.time())}", f"sqlite:///{tmp_path / 'out' / 'ledger.db'}"
  if backend == "postgresql":
    url = os.environ.get("EMBBERT_TEST_POSTGRES_URL")
    if not url:
      pytest.skip("no PostgreSQL server: set EMBBERT_TEST_POSTGRES_URL (.ci/services.sh starts one)")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2-binary is not installed")
  args = _cli(tmp_path, fake, "--scheduler", "asha", "--time-budget", "none", "--rungs", "3", "--eta", "2",
              "--final-seeds", "2", "--max-trials", "8", "--no-summary", "--storage", url, study=study, steps=12)
  procs = [_worker(args, {"FAKE_STEP_S": "0.05", "FAKE_LOG": str(log)}) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  try:
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(url, study)
    plan = asha.Plan.from_dict(ledger_lib.Ledger(ledger_lib.open_storage(url), study,
                                                 ["maximize", "minimize"]).study_attrs()["asha"]["plan"])
    _check_asha_ledger(trials, plan)
    assert len({t.system_attrs["embbert:worker"] for t in trials}) == 2  # both took part
    calls = [(c["name"], c["start"]) for c in map(json.loads, log.read_text().splitlines())]
    assert len(calls) == len(set(calls))  # no (trial, rung) trained twice
  finally:
    if backend == "postgresql":
      optuna.delete_study(study_name=study, storage=url)


def test_asha_refuses_a_train_grid_and_bad_rungs(tmp_path, fake):
  with pytest.raises(sweep.SweepError, match="train_grid"):
    sweep.prepare(_settings(tmp_path, fake, space="tiny_grouped"))
  with pytest.raises(sweep.SweepError, match="--eta"):
    sweep.prepare(_settings(tmp_path, fake, eta=1))
  with pytest.raises(sweep.SweepError, match="time budget"):
    sweep.prepare(_settings(tmp_path, fake, time_budget="soon"))


def test_real_trainer_two_rung_sweep(tmp_path):
  """Tiny configs trained for real: rung 0 pauses, a promoted trial resumes its checkpoint at rung 1."""
  s = sweep.get_config()
  s.update(dict(budget="2MB", space="tiny", scheduler="asha", time_budget="none", steps=8, rungs=2, eta=2,
                final_seeds=1,
                max_trials=2, wandb=False, out=str(tmp_path / "out"), study="real"))
  lines = []
  out = sweep.run_sweep(s, log=lines.append)
  rows = out["rows"]
  assert sorted(r["status"] for r in rows) == ["complete", "pruned"], rows
  done = next(r for r in rows if r["status"] == "complete")
  assert done["steps"] == 8 and -1 <= done["validation_mcc"] <= 1
  assert any("paused at rung 0 (4 steps)" in x for x in lines), lines
  metrics = [json.loads(x) for x in next((tmp_path / "out" / "trials").glob(f"{done['trial']:04d}-*")).joinpath(
      "finetune", "metrics.jsonl").read_text().splitlines()]
  assert {m["step"] for m in metrics if "validation/accuracy" in m} >= {4, 8}
  assert [p["trial"] for p in out["front"]] == [done["trial"]]
  for folder in (tmp_path / "out" / "trials").glob("*"):  # widths priced over a trial's mean: 4 + 4 / 2
    assert json.loads((folder / "finetune" / "config.json").read_text())["bucket_steps"] == 6


# ------------------------------------------------------------------------------ the ledger under faults


def _ledger(url, study="locks", grace_period=120):
  return ledger_lib.Ledger(ledger_lib.open_storage(url, 1, grace_period), study, ["maximize", "minimize"])


def test_a_held_lock_is_renewed_and_only_a_dead_holders_lease_expires(tmp_path, monkeypatch):
  """The study lock's lease outlives LOCK_LEASE_S while its holder is alive (a thread renews it), so a
  second worker waits instead of stealing it; a holder that stopped renewing (died) loses it."""
  monkeypatch.setattr(ledger_lib, "LOCK_LEASE_S", 0.8)
  url = f"sqlite:///{tmp_path / 'ledger.db'}"
  a, b = _ledger(url), _ledger(url)
  with a.lock():
    time.sleep(2.0)  # two and a half leases
    with pytest.raises(ledger_lib.LedgerError, match="could not get the lock"):
      with b.lock(timeout_s=1.0):
        pass
  with b.lock(timeout_s=1.0):  # released: free at once
    pass
  # A dead holder's row (no thread renews it) expires after its lease.
  with a.storage.engine.begin() as conn:
    conn.execute(ledger_lib._LOCKS.insert().values(name="study:locks", holder="dead",
                                                   expires=time.time() + 0.8))
  t0 = time.monotonic()
  with b.lock(timeout_s=5.0):
    assert 0.6 <= time.monotonic() - t0 < 4.0


def test_a_trial_keeps_its_heartbeat_until_its_result_is_recorded(tmp_path, fake, monkeypatch):
  """A worker that waits for the study lock after training (another worker holds it, a slow ledger) is
  alive: its trial's heartbeat goes on until the result is in the ledger, so no other worker reclaims it
  as stale and trains it again while its result is being recorded."""
  from embbert_jax import worker
  record, stale = worker._record, []

  def slow_record(sw, led, outcomes, grp):
    if not stale:  # the first result waits past the grace period, then another worker looks for stale trials
      time.sleep(4.5)
      other = _ledger(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}", "a", grace_period=3)
      with other.lock():
        stale.append(other.requeue_stale(3))
    return record(sw, led, outcomes, grp)

  monkeypatch.setattr(worker, "_record", slow_record)
  lines = []
  sweep.run_sweep(_settings(tmp_path, fake, max_trials=2, rungs=2, final_seeds=1), log=lines.append, summary=False)
  assert stale == [[]], stale
  assert not any("took it over" in x for x in lines), lines


def test_workers_that_start_together_calibrate_once(tmp_path, fake, monkeypatch):
  """Several first workers at once: one calibrates, the others wait for its plan and reuse it (each
  calibrating would cost each the throwaway run, and on one accelerator their runs would skew each other's
  rates). A calibrating worker that dies leaves its lock to expire, and a waiting one calibrates instead."""
  import threading
  from embbert_jax import engine, scheduler
  calls = []

  def calibrate(sw, top_steps):
    calls.append(threading.current_thread().name)
    time.sleep(1.0)
    return asha.Costs(step_s=0.001, compile_s=0.0)

  monkeypatch.setattr(scheduler, "calibrate", calibrate)
  sw = engine.prepare(_settings(tmp_path, fake, time_budget="30s", max_trials=0), log=lambda m: None)
  leds = [engine.open_ledger(sw) for _ in range(3)]
  states = [None] * len(leds)

  def start(i):
    states[i] = scheduler.setup(sw, leds[i], time.time())

  threads = [threading.Thread(target=start, args=(i,), name=f"worker{i}") for i in range(len(leds))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert len(calls) == 1, calls
  assert states[0] is not None and len({json.dumps(s, sort_keys=True) for s in states}) == 1  # one plan
  # A worker that died calibrating (its lock row no longer renewed) holds the others up for one lease only.
  monkeypatch.setattr(ledger_lib, "LOCK_LEASE_S", 0.5)
  sw2 = engine.prepare(_settings(tmp_path, fake, time_budget="30s", max_trials=0, study="b"), log=lambda m: None)
  led = engine.open_ledger(sw2)
  with led.storage.engine.begin() as conn:
    conn.execute(ledger_lib._LOCKS.insert().values(name="calibrate:b", holder="dead", expires=time.time() + 0.5))
  assert scheduler.setup(sw2, led, time.time())["plan"] and len(calls) == 2


def test_calibration_prices_compile_cold_and_auto_rungs_say_why(tmp_path, fake, monkeypatch):
  """The median config calibrates in every sweep of a task, so from the second sweep on its programs load
  from the persistent cache: the seconds JAX says the cache saved are added back (a warm calibration read
  2.5 s of compile where the sweep's new configs paid 9-12 s). --rungs 0 then picks the rung count."""
  import jax.monitoring
  from embbert_jax import engine
  monkeypatch.setenv("FAKE_INIT_S", "0.5")
  sw = engine.prepare(_settings(tmp_path, fake, time_budget="30m", max_trials=0, rungs=0, steps=900,
                                 eta=3),
                      log=lambda m: None)
  lines = []
  monkeypatch.setattr(sw, "log", lines.append)
  real = sw.trainer.train_and_evaluate

  def train_and_evaluate(cfg, workdir, report=None):
    jax.monitoring.record_event_duration_secs(scheduler.SAVED_COMPILE_EVENT, 7.0)
    jax.monitoring.record_event_duration_secs("/jax/some/other_sec", 100.0)  # not a cache saving
    return real(cfg, workdir, report)

  monkeypatch.setattr(sw.trainer, "train_and_evaluate", train_and_evaluate)
  costs = scheduler.calibrate(sw, 900)
  assert costs.compile_s == pytest.approx(7.5, abs=0.1)
  assert "compile 7.5 s (initial params 0.5 s + 7.0 s the compilation cache saved)" in lines[-1]
  jax.monitoring.record_event_duration_secs(scheduler.SAVED_COMPILE_EVENT, 5.0)  # after: not counted
  monkeypatch.setattr(scheduler, "calibrate", lambda sw, top: asha.Costs(step_s=0.05, compile_s=7.5))
  # --steps gives no epochs: no floor, 3 rungs; two epochs of 90 steps (R_max = 10 epochs) refuse 3 rungs.
  assert len(scheduler.make_state(sw, time.time())["plan"]["rung_steps"]) == 3
  floor = scheduler.min_rung0_steps
  monkeypatch.setattr(scheduler, "min_rung0_steps", lambda sw, cfg, top: 180)
  state = scheduler.make_state(sw, time.time())
  assert tuple(state["plan"]["rung_steps"]) == (300, 900)
  assert state["rungs_why"] == ["not 3 rungs: rung 0 would train 100 steps, under 180"]
  assert "not 3 rungs" in scheduler.describe(state)
  # An explicit --rungs is kept.
  monkeypatch.setattr(sw.settings, "rungs", 3)
  assert len(scheduler.make_state(sw, time.time())["plan"]["rung_steps"]) == 3
  # One of the recipe's epochs when R_max is its run (4 epochs of 265 steps); none with --steps.
  import ml_collections
  assert floor(sw, ml_collections.ConfigDict(dict(epochs=4)), 1060) == 0  # steps=900
  monkeypatch.setattr(sw.settings, "steps", 0)
  assert floor(sw, ml_collections.ConfigDict(dict(epochs=4)), 1060) == 265
  # The recipe's 4 epochs with eta 3: 3 rungs would start at 0.44 epochs (refused), 2 at 1.33.
  assert asha.auto_rungs(1060, 3, min_rung0_steps=265) == (2, ("not 3 rungs: rung 0 would train 118 steps, under 265",))
  assert floor(sw, ml_collections.ConfigDict(), 2650) == 0


def test_trials_validate_once_an_epoch_or_twice_per_rung_zero_if_sooner():
  """The 45-minute rt_polarity sweep of 2026-12-02 validated every 441 steps (half of rung 0, 1.7 epochs):
  its seeds' best checkpoints came from step 441 where the same config, validated once an epoch, peaks
  at 530-1060 steps and then overfits. Rung fields, cost and resumed studies use the one interval."""
  plan = asha.Plan(eta=3, rung_steps=(883, 2650), band_edges=(100_000, 2_000_000), n0=9).to_dict()
  assert scheduler.eval_every({"plan": plan, "epoch_steps": 265}) == 265
  assert scheduler.eval_every({"plan": plan, "epoch_steps": 2000}) == 441  # two per rung 0 at least
  assert scheduler.eval_every({"plan": plan, "epoch_steps": 0}) == 441  # --steps: no epochs
  assert scheduler.eval_every({"plan": plan}) == 441  # a study planned before epochs were recorded
  fields = scheduler.rung_fields({"plan": plan}, 0, scheduler.eval_every({"plan": plan, "epoch_steps": 265}), 4)
  assert (fields["eval_every"], fields["stop_at"], fields["patience"]) == (265, 883, 4)
  import ml_collections
  sw = type("Sw", (), {"settings": ml_collections.ConfigDict(dict(steps=0))})()
  assert scheduler.epoch_steps(sw, ml_collections.ConfigDict(dict(epochs=10)), 2650) == 265
  assert scheduler.epoch_steps(sw, ml_collections.ConfigDict(), 2650) == 0


class _Killed(BaseException):
  """The worker process dying at this point (nothing of it runs any further)."""


def test_a_worker_killed_recording_a_top_rung_result_leaves_the_trial_complete(tmp_path, fake, monkeypatch):
  """A worker that dies inside _record after the top rung's result is written to the trial but before
  the trial is finished leaves it RUNNING; reclaimed as stale it would wait at the top rung, where nothing
  claims it (the final phase waited for it, then the sweep pruned it). The reclaiming worker finishes it
  from the recorded result instead: complete, trained once per rung, with its final seed."""
  finish, killed = ledger_lib.Ledger.finish, []

  def dying_finish(self, trial_id, state, values, user_attrs):
    if not killed and (user_attrs.get("rungs") or [[0]])[-1][0] == 2:  # the first top-rung result
      killed.append(self.trial(trial_id).number)
      for k, v in user_attrs.items():  # written, and then the process dies before the state is set
        self.set_user_attr(trial_id, k, v)
      raise _Killed()
    return finish(self, trial_id, state, values, user_attrs)

  monkeypatch.setattr(ledger_lib.Ledger, "finish", dying_finish)
  settings = dict(grace_period=2, max_trials=4)
  with pytest.raises(_Killed):
    sweep.run_sweep(_settings(tmp_path, fake, **settings), log=lambda m: None, summary=False)
  lines = []
  sweep.run_sweep(_settings(tmp_path, fake, **settings), log=lines.append, summary=False)
  url = f"sqlite:///{tmp_path / 'out' / 'ledger.db'}"
  trials = _trials(url, "a")
  victim = trials[killed[0]]
  assert victim.state == TrialState.COMPLETE, (victim.state, lines)
  assert any(x.startswith(f"trial {victim.number}: its worker died recording") for x in lines), lines
  assert victim.values == [victim.user_attrs["rungs"][-1][2], victim.user_attrs["bytes"]["fp32"]["total"]]
  assert [t.user_attrs["final_of"] for t in trials if t.user_attrs.get("final_of") is not None].count(
      victim.number) == 1  # its final seed was trained
  _check_asha_ledger(trials, asha.Plan.from_dict(_ledger(url, "a").study_attrs()["asha"]["plan"]))


def test_a_failed_final_seed_keeps_its_bands_point_from_the_seeds_that_succeeded(tmp_path, fake):
  """A final seed that fails (here seed 2 of 3: a crash, a NaN) leaves each band's point on the frontier as
  the mean and sd of the seeds that succeeded, with their count, and the point and the table name the
  failed seed; it used to drop the band's point altogether."""
  import types
  from embbert_jax import engine
  base = engine.load_trainer(str(fake))
  trainer = types.SimpleNamespace(**{k: getattr(base, k) for k in dir(base) if not k.startswith("__")})

  def train_and_evaluate(cfg, workdir, report=None):
    if cfg.seed == 2:
      raise RuntimeError("out of memory")
    return base.train_and_evaluate(cfg, workdir, report)

  def train_group(cfgs, workdirs, report=None):
    out = base.train_group(cfgs, workdirs, report)
    return [{"status": "failed", "error": "loss is nan"} if c.seed == 2 else o for c, o in zip(cfgs, out)]

  trainer.train_and_evaluate, trainer.train_group = train_and_evaluate, train_group
  sweep.run_sweep(_settings(tmp_path, fake, final_seeds=3, max_trials=8), trainer=trainer, log=lambda m: None,
                  summary=False)
  url = f"sqlite:///{tmp_path / 'out' / 'ledger.db'}"
  trials = _trials(url, "a")
  plan = asha.Plan.from_dict(_ledger(url, "a").study_attrs()["asha"]["plan"])
  seeded = {t.user_attrs["final_of"] for t in trials if t.user_attrs.get("final_of") is not None}
  failed = {t.user_attrs["final_of"]: t.number for t in trials if t.state == TrialState.FAIL}
  assert seeded and set(failed) == seeded  # every seeded config lost its seed 2
  rows = [pareto.trial_row(t, "fp32") for t in trials]
  points = {p["trial"]: p for p in pareto.shape_points(rows)}
  for n in seeded:
    p = points[n]  # still a point: the seeds that succeeded
    done = [r["value"] for r in rows if r["trial"] in (n, *(t.number for t in trials
                                                              if t.user_attrs.get("final_of") == n))
            and r["status"] == "complete"]
    assert p["repeats"] == len(done) == 2 and p["failed_seeds"] == [failed[n]]
    assert p["value"] == pytest.approx(sum(done) / 2) and p["value_std"] > 0
  front = pareto.frontier_rows(rows)
  assert {plan.band(p["memory_bytes"]) for p in front} == {0, 1}  # each band keeps its point
  table = pareto.format_table(rows, front, {"metric": "mcc"})
  assert all(p["failed_seeds"] for p in front if p["trial"] in seeded) and any(p["trial"] in seeded for p in front)
  for p in front:
    if p["trial"] in seeded:
      assert f"mean of 2 seeds, sd {p['value_std']:.4f}; seed trial {failed[p['trial']]} failed" in table, table
