"""The multi-fidelity sweep: asha.py's rules played on the shared ledger (`--time-budget 45m`, or
`--scheduler asha`).

A trial's life, every move under the study lock (so two workers never promote the same trial):

* **start**: a new config enters WAITING with target rung 0 (system attr ledger.TARGET) and is claimed;
  it trains with the schedule of the whole run (R_max steps, the top rung) and pauses at its rung's steps.
* **pause**: at the rung's steps the trainer returns (loop.fit's `stop_at`); the rung's validation result
  is appended to the trial's user attr `rungs` and the trial goes back to WAITING. A paused trial is not
  claimable: its target rung is reached.
* **promote**: asha.next_action ranks the paused trials of each (memory band, rung) and picks one; its
  target goes up one rung and the claiming worker resumes it from its checkpoint, same schedule.
* **complete**: at the top rung (R_max steps, or a validation plateau: `patience`) the trial is COMPLETE
  with its (validation metric, memory) values.
* **final seeds**: when the search phase ends (its share of the time budget is spent, or --max-trials
  configs started), each band whose top rung is empty sends its best paused trial there (asha.close_out),
  then the best top-rung trial of each band gets `final_seeds - 1` more trials with other seeds, trained
  straight to the top rung; the frontier scores their mean (pareto.py: seeds are repeats).
* **end**: trials still paused are PRUNED ("not promoted past rung k"); the frontier is drawn from the
  top rung only, the lower rungs are faint points in the plot.

A preempted trial (SIGTERM, a dead worker) is WAITING with its target above what it reached: any worker
resumes it (one whose worker died while recording its top-rung result is finished from it: `settle`).
With `--time-budget`, the first worker measures one config's compile, step and evaluation time on the
task (a short throwaway run), asha.plan sizes the rungs, bands and final phase to fit, and the plan, the
deadline and what the planner dropped are written to the ledger (study attr "asha") once, for every
worker. Before a final-phase training starts, its cost is estimated from the trial's measured rate; what
would overrun the deadline is dropped, and said.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from optuna.trial import FrozenTrial, TrialState

from embbert_jax import asha, configs, ledger as ledger_lib, memory
from embbert_jax import space as space_lib
from embbert_jax.engine import member_attrs, member_hash, trainer_config

STATE = ledger_lib.ASHA_STATE  # the study attr holding the plan and the clock
WORKERS_ENV = "EMBBERT_JAX_WORKERS"  # how many workers `sweep --workers N` started: the plan counts on them
DEFAULT_R_MAX = 400  # a trainer that cannot say how long its run is (no run_length)
AUTO_RUNGS = 3  # --rungs 0 (auto): at most this many (asha.auto_rungs)
MIN_RUNG0_EPOCHS = 1  # --rungs 0: rung 0 trains at least this many epochs (asha.auto_rungs says why)
SAVED_COMPILE_EVENT = "/jax/compilation_cache/compile_time_saved_sec"  # jax.monitoring: a cache load's saving


def target(t: FrozenTrial) -> int | None:
  return t.system_attrs.get(ledger_lib.TARGET)


def reached(t: FrozenTrial) -> int:
  """The highest rung the trial has reported (-1: none)."""
  return max((r[0] for r in t.user_attrs.get("rungs", [])), default=-1)


def claimable(t: FrozenTrial) -> bool:
  """WAITING and allowed further than it got: new, promoted, preempted, or a final seed."""
  tg = target(t)
  return t.state == TrialState.WAITING and (tg is None or tg > reached(t))


def is_final(t: FrozenTrial) -> bool:
  return t.user_attrs.get("final_of") is not None


def trial_config(sw, trial: FrozenTrial):
  a = trial.user_attrs  # the trainer config of the trial's next call: horizon, rung, evaluations, patience
  return with_rung(sw, trainer_config(sw, a["model"], trial.number, a["hash"], a.get("train")), target(trial) or 0)


def group_limit(sw, cfg) -> int:
  """How many member trials one program trains: 1 without train_group (or with --no-group)."""
  t = sw.trainer
  if not (sw.settings.group and hasattr(t, "train_group")):
    return 1
  return max(1, int(t.max_group_size(cfg))) if hasattr(t, "max_group_size") else len(sw.members)


def seed_runs(sw, plan: asha.Plan, t: FrozenTrial) -> int:
  """Trainings that give pick t its final_seeds - 1 more seeds: groups of group_limit (worker._claim_group)."""
  return asha.seed_runs(plan.final_seeds, group_limit(sw, trial_config(sw, t))) if plan.final_seeds > 1 else 0


# ----------------------------------------------------------------------------------------------- the plan


def r_max(sw, cfg) -> int:
  """The top rung's steps: --steps if given, else the trainer's whole recipe run (epochs x steps/epoch)."""
  if sw.settings.steps:
    return int(sw.settings.steps)
  length = getattr(sw.trainer, "run_length", None)
  return int(length(cfg)) if length else DEFAULT_R_MAX


def epoch_steps(sw, cfg, top_steps: int) -> int:
  """Steps of one of the recipe's epochs when R_max is the recipe's run; 0 with --steps (no epochs)."""
  epochs = 0 if sw.settings.steps else int(getattr(cfg, "epochs", 0) or 0)
  return top_steps // epochs if epochs else 0


def min_rung0_steps(sw, cfg, top_steps: int) -> int:
  """MIN_RUNG0_EPOCHS of the recipe's epochs when R_max is the recipe's run; 0 with --steps (no epochs)."""
  return MIN_RUNG0_EPOCHS * epoch_steps(sw, cfg, top_steps)


class _SavedCompile:
  """Seconds of compile the persistent compilation cache saved while open (jax.monitoring's own event)."""

  def __enter__(self):
    self.saved = 0.0
    _jax_monitoring().register_event_duration_secs_listener(self._listen)
    return self

  def _listen(self, event: str, secs: float, **_) -> None:
    if event == SAVED_COMPILE_EVENT:
      self.saved += max(0.0, secs)

  def __exit__(self, *exc):
    _jax_monitoring().unregister_event_duration_listener(self._listen)


def _jax_monitoring():
  import jax.monitoring  # here, not at import: the sweep's launcher and its tests run without JAX
  return jax.monitoring


def _median_candidate(sw):
  by_size = sorted(sw.ordered, key=lambda c: c.total(sw.settings.policy))
  return by_size[len(by_size) // 2]


def calibrate(sw, top_steps: int) -> asha.Costs:
  """Compile, step and evaluation seconds of the median fitting config, from a short throwaway run of the
  trainer (two evaluations, so compile and steady cost separate), in a temporary folder.

  Compile is priced cold: the median config is the same in every sweep of a task, so from the second
  sweep on its programs load from the persistent cache (2.5 s where the first sweep's took 12.6 s) while
  the search's new configs compile; the seconds the cache saved (JAX's own measure) are added back."""
  cand = _median_candidate(sw)
  k = max(1, min(20, top_steps // 8))
  cfg = trainer_config(sw, cand.model, number=0, hash_="calibrate", knobs={})
  t0 = time.time()
  with tempfile.TemporaryDirectory(prefix="embbert-calibrate-") as tmp:
    for key, value in {"steps": top_steps, "stop_at": 2 * k, "eval_every": k, "log_every": k,
                       "wandb.mode": "disabled", "patience": 0, "pretrain.steps": 0}.items():
      if key.split(".")[0] in cfg:
        configs.set_field(cfg, key, value)
    with _SavedCompile() as cache:
      result = sw.trainer.train_and_evaluate(cfg, Path(tmp), report=None)
  wall = time.time() - t0
  tm = result.get("timing") or {}
  step_s = float(tm.get("step_s") or result.get("train_time_s", wall) / max(2 * k, 1))
  # A new config pays its initial params' program too (timed apart as init_s, about 3 s on this CPU).
  init_s = float(tm.get("init_s", 0.0))
  compile_s = float(tm.get("compile_s", 0.0)) + init_s
  eval_s = float(tm.get("eval_each_s", 0.0))
  setup_s = max(0.0, wall - compile_s - step_s * 2 * k - eval_s * 2)
  cached = f" + {cache.saved:.1f} s the compilation cache saved" if cache.saved > 0 else ""
  compile_s += cache.saved
  sw.log(f"calibration on {cand.describe()} ({memory.format_bytes(cand.total(sw.settings.policy))}): "
         f"compile {compile_s:.1f} s (initial params {init_s:.1f} s{cached}), step {step_s * 1e3:.1f} ms, "
         f"evaluation {eval_s:.1f} s, data and setup {setup_s:.1f} s ({wall:.0f} s in all)")
  return asha.Costs(step_s=step_s, compile_s=compile_s + setup_s * 0.1, eval_s=eval_s, setup_s=setup_s + wall)


def make_state(sw, started: float) -> dict[str, Any]:
  """The study's schedule: rungs, bands, the final phase and the clock (written to the ledger once)."""
  s = sw.settings
  smallest = min(c.total(s.policy) for c in sw.ordered)
  biggest = max(c.total(s.policy) for c in sw.ordered)
  median_cfg = trainer_config(sw, _median_candidate(sw).model, 0, "r_max", {})
  workers = max(1, int(os.environ.get(WORKERS_ENV, "1")))
  top_steps = r_max(sw, median_cfg)
  rungs, rungs_why = s.rungs, ()
  if not rungs:
    rungs, rungs_why = asha.auto_rungs(top_steps, s.eta, max_rungs=AUTO_RUNGS,
                                       min_rung0_steps=min_rung0_steps(sw, median_cfg, top_steps))
  if s.time_budget:
    budget_s = asha.parse_duration(s.time_budget)
    costs = calibrate(sw, top_steps)
    elapsed = time.time() - started
    plan = asha.plan(budget_s, costs, r_max=top_steps, smallest=smallest, budget=max(biggest, smallest),
                     eta=s.eta, rungs=rungs, final_seeds=s.final_seeds, workers=workers, spent_s=elapsed,
                     seed_width=group_limit(sw, median_cfg), max_trials=s.max_trials or None)
    deadline = started + budget_s
    search_until = deadline - budget_s * 0.1 - plan.est_final_s
    costs_d = dict(step_s=costs.step_s, compile_s=costs.compile_s, eval_s=costs.eval_s)
  else:
    n0 = s.max_trials or s.eta ** rungs
    bands = asha.band_count(n0, s.eta)
    plan = asha.Plan(eta=s.eta, rung_steps=asha.rung_schedule(top_steps, s.eta, rungs),
                     band_edges=asha.band_edges(smallest, max(biggest, smallest), bands), n0=n0,
                     final_seeds=s.final_seeds, tiebreak_rungs=1 if rungs > 1 else 0)
    deadline = search_until = math.inf
    costs_d = {}
  return {"plan": plan.to_dict(), "started": started, "deadline": deadline, "search_until": search_until,
          "eps": sw.eps, "costs": costs_d, "dropped": list(plan.dropped), "rungs_why": list(rungs_why),
          "epoch_steps": epoch_steps(sw, median_cfg, top_steps), "workers": workers}


def describe(state: dict) -> str:
  plan = asha.Plan.from_dict(state["plan"])
  edges = ", ".join(memory.format_bytes(b) for b in plan.band_edges)
  text = (f"multi-fidelity plan: rungs at {', '.join(map(str, plan.rung_steps))} steps (eta {plan.eta}), "
          f"{plan.bands} memory band(s) [{edges}], about {plan.n0} configs started, best of each band "
          f"x {plan.final_seeds} seed(s), ties below {state['eps']:.3f}")
  if math.isfinite(state["deadline"]):
    text += (f"; search {plan.est_search_s / 60:.1f} min + final {plan.est_final_s / 60:.1f} min "
             f"(estimated), ends by {time.strftime('%H:%M:%S', time.localtime(state['deadline']))}")
  if state.get("rungs_why"):
    text += "; " + "; ".join(state["rungs_why"])
  if state.get("dropped"):
    text += "; to fit the budget: " + "; ".join(state["dropped"])
  return text


def setup(sw, led, started: float) -> dict[str, Any]:
  """The study's schedule from the ledger, or (the first worker) made and written there.

  Workers that start together queue on the study's "calibrate" lock, and each looks again once it has it:
  the first calibrates and writes the plan, the others find it. Calibrating in every worker would cost
  each one the throwaway run, and on a shared accelerator the runs would slow each other and skew the
  measured rates the plan is sized from. The lock is renewed while its holder lives (ledger.Ledger.lock):
  a worker that dies calibrating frees it one lease later, and a waiting worker calibrates instead."""
  def read():
    with led.lock():
      return led.study_attrs().get(STATE)

  state = read()
  if state is None:
    s = sw.settings
    wait_s = asha.parse_duration(s.time_budget) if s.time_budget else 600.0  # no plan is worth a longer wait
    with led.lock(timeout_s=wait_s, name="calibrate"):
      state = read()
      if state is None:
        made = make_state(sw, started)  # outside the study lock: calibration trains for a while
        with led.lock():
          state = led.study_attrs().get(STATE)
          if state is None:
            state = made
            led.set_study_attr(STATE, state)
  sw.log(describe(state))
  return state


# ------------------------------------------------------------------------------------------ the decisions


def records(plan: asha.Plan, trials: list[FrozenTrial]) -> list[asha.Record]:
  """Every rung result of the search trials (final seeds are not candidates). A trainer that reports no
  validation loss is ranked on its metric at every rung (loss = -metric)."""
  out = []
  for t in trials:
    if is_final(t) or t.state == TrialState.FAIL:
      continue
    tg = math.inf if t.state == TrialState.PRUNED else (target(t) or 0)  # pruned: out of the race
    nbytes = t.user_attrs["bytes_total"]
    for rung, _, metric, loss in t.user_attrs.get("rungs", []):
      metric = math.nan if metric is None else metric
      if loss is None:  # a trainer that reports no loss
        loss = -metric
      elif not math.isfinite(loss):  # a diverged loss ranks last
        loss = math.inf
      out.append(asha.Record(t.number, rung, nbytes, metric, loss, promoted=tg > rung))
  return out


def _cost(state: dict, t: FrozenTrial | None, steps: int) -> float:
  """Seconds `steps` more steps of trial t (None: a new config) are expected to take."""
  c = state.get("costs") or {}
  rate = ((t.user_attrs.get("timing") or {}).get("step_s") if t is not None else None) or c.get("step_s", 0.0)
  evals = max(1, steps // eval_every(state))
  return c.get("compile_s", 0.0) + steps * rate * (1.0 if t is not None else 1.5) + evals * c.get("eval_s", 0.0)


def _drop(led, state: dict, sw, note: str) -> None:
  """Records (once) what the deadline made the sweep give up."""
  attrs = led.study_attrs().get(STATE, state)
  if note not in attrs.get("dropped", []):
    attrs = {**attrs, "dropped": [*attrs.get("dropped", []), note]}
    led.set_study_attr(STATE, attrs)
    sw.log(f"time budget: {note}")


def _promote(led, t: FrozenTrial, rung: int) -> None:
  led.set_system_attr(t._trial_id, ledger_lib.TARGET, rung)


def _new_trial(sw, led, cand, rung: int, knobs: dict, extra: dict | None = None) -> None:
  attrs = {**member_attrs(cand, knobs, sw.init), "bytes_total": cand.total(sw.settings.policy), **(extra or {})}
  led.add_waiting(cand.optuna_params, space_lib.distributions(sw.space), attrs,
                  {ledger_lib.HASH: member_hash(cand.hash, knobs), ledger_lib.TARGET: rung})


def _started(plan: asha.Plan, trials: list[FrozenTrial]) -> dict[int, int]:
  """Search trials per band (started ones, running ones included; final seeds not)."""
  started: dict[int, int] = {}
  for t in trials:
    if not is_final(t):
      b = plan.band(t.user_attrs["bytes_total"])
      started[b] = started.get(b, 0) + 1
  return started


def _start_pick(sw, plan: asha.Plan, trials: list[FrozenTrial], band: int, started: dict[int, int]):
  """The config a new trial (target rung 0) starts from `band`, else from the band with the fewest
  started that still has configs: its first free config in memory-spread order; None when every fitting
  config is taken."""
  taken = {t.user_attrs.get("shape") for t in trials}
  policy = sw.settings.policy
  free: dict[int, Any] = {}
  for c in sw.ordered:
    if c.hash not in taken:
      free.setdefault(plan.band(c.total(policy)), c)
  if not free:
    return None
  return free[band if band in free else min(free, key=lambda b: (started.get(b, 0), b))]


def _start_in_band(sw, led, plan: asha.Plan, trials: list[FrozenTrial], band: int,
                   started: dict[int, int]) -> bool:
  """Adds a new config's trial (_start_pick); False when every fitting config is taken."""
  cand = _start_pick(sw, plan, trials, band, started)
  if cand is not None:
    _new_trial(sw, led, cand, 0, {})
  return cand is not None


def next_start(sw, led, state: dict):
  """The config the next "start" would train (as next_trials picks it, from the ledger as it is now),
  for compiling its programs ahead (worker.py); None once the search is over or nothing is left. Not
  under the lock: a guess, which promotions or other workers may overtake."""
  plan = asha.Plan.from_dict(state["plan"])
  trials = led.trials()
  search = [t for t in trials if not is_final(t)]
  started = _started(plan, trials)
  cap = (sw.settings.max_trials or 10 ** 9) if sw.settings.time_budget else plan.n0  # as next_trials caps
  until = search_until(state, plan, search, records(plan, trials), lambda t: seed_runs(sw, plan, t))
  if sum(started.values()) >= cap or time.time() >= until:
    return None
  return _start_pick(sw, plan, trials, asha.start_band(plan, started), started)


def next_trials(sw, led, state: dict, claim: Callable) -> list[FrozenTrial]:
  """Under the study lock: requeue stale trials, then resume, promote, start, close out or add final seeds,
  as asha.py says; claims and returns the trials to train now ([] = nothing to do now)."""
  s = sw.settings
  plan = asha.Plan.from_dict(state["plan"])
  with led.lock():
    for number, outcome in led.requeue_stale(s.max_attempts):
      sw.log(f"trial {number}: its worker stopped sending heartbeats; {outcome}")
    trials = led.trials()
    if settle(sw, led, plan, trials):
      trials = led.trials()
    waiting = sorted((t for t in trials if claimable(t)), key=lambda t: t.number)
    if waiting:
      return claim(sw, led, waiting)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    search = [t for t in trials if not is_final(t)]
    recs = records(plan, trials)
    searching = time.time() < search_until(state, plan, search, recs, lambda t: seed_runs(sw, plan, t))
    if searching:
      started = _started(plan, trials)
      # With a time budget the clock ends the search, not plan.n0 (an estimate from the calibration);
      # promotions go on after the last start, until the clock or the quotas say no.
      cap = (s.max_trials or 10 ** 9) if s.time_budget else plan.n0
      act = asha.next_action(dataclasses.replace(plan, n0=cap), recs, started, running=len(running),
                             eps=state["eps"], searching=True)
      t = next((t for t in trials if t.number == act.trial), None) if act.kind == "promote" else None
      if t is not None and act.rung == plan.top and time.time() + _cost(
          state, t, plan.rung_steps[plan.top] - plan.rung_steps[act.rung - 1]) > state["deadline"]:
        _drop(led, state, sw, f"trial {t.number} not promoted to the top rung: it would end after the deadline")
        act = asha.Action("done")
      if act.kind == "promote":
        _promote(led, t, act.rung)
        sw.log(f"trial {t.number}: promoted to rung {act.rung} ({plan.rung_steps[act.rung]} steps), band "
               f"{act.band}")
        return claim(sw, led, [led.trial(t._trial_id)])
      if act.kind == "start" and _start_in_band(sw, led, plan, trials, act.band, started):
        return claim(sw, led, sorted((t for t in led.trials((TrialState.WAITING,)) if claimable(t)),
                                     key=lambda t: t.number))
      if act.kind == "wait":
        return []
    # The final phase: wait for the search's trainings, then fill empty top rungs, then the seeds.
    if any(not is_final(t) for t in running):
      return []
    for r in asha.close_out(plan, recs, state["eps"]):
      band_has_top = any(plan.band(t.user_attrs["bytes_total"]) == plan.band(r.bytes)
                         and (target(t) or 0) >= plan.top and t.state != TrialState.FAIL for t in search)
      if band_has_top:
        continue
      t = next(t for t in trials if t.number == r.trial)
      steps = plan.rung_steps[plan.top] - plan.rung_steps[r.rung]
      if time.time() + _cost(state, t, steps) > state["deadline"]:
        _drop(led, state, sw, f"trial {t.number} (best of band {plan.band(r.bytes)}) not trained to the top rung")
        continue
      _promote(led, t, plan.top)
      sw.log(f"trial {t.number}: best of band {plan.band(r.bytes)}, sent to the top rung to close out")
      return claim(sw, led, [led.trial(t._trial_id)])
    if any((target(t) or 0) >= plan.top and t.state != TrialState.COMPLETE and t.state != TrialState.FAIL
           for t in search):
      return []
    have = {t.user_attrs["final_of"] for t in trials if is_final(t)}
    for r in asha.final_picks(plan, recs, state["eps"]):
      if r.trial in have or plan.final_seeds <= 1:
        continue
      t = next(t for t in trials if t.number == r.trial)
      seeds_s = _cost(state, t, plan.rung_steps[plan.top]) * seed_runs(sw, plan, t)
      if time.time() + seeds_s > state["deadline"]:
        _drop(led, state, sw, f"no extra seeds for trial {t.number} (band {plan.band(r.bytes)})")
        continue
      cand = sw.fitting.get(t.user_attrs.get("shape"))
      if cand is None:
        continue
      for i in range(1, plan.final_seeds):
        _new_trial(sw, led, cand, plan.top, {"seed": s.seed + i}, {"final_of": t.number})
      sw.log(f"trial {t.number}: best of band {plan.band(r.bytes)}; {plan.final_seeds - 1} more seed(s)")
      return claim(sw, led, sorted((t for t in led.trials((TrialState.WAITING,)) if claimable(t)),
                                   key=lambda t: t.number))
    return []


def settle(sw, led, plan: asha.Plan, trials: list[FrozenTrial]) -> bool:
  """Finishes the trials whose worker died inside worker._record between writing the top rung's result
  and finishing the trial (call with the lock held; True if any). Requeued as stale, such a trial waits at
  the top rung, which is never legitimate: nothing claims it (its target is reached), the final phase
  waits for it, and finish() prunes it. Its result is whole in the ledger (`rungs` is the last attr
  _record writes), so it is finished from it, as _record would have: COMPLETE with (metric, memory), or
  FAIL for a non-finite metric. A death before `rungs` leaves the trial claimable: it is trained again."""
  done = False
  for t in trials:
    if t.state != TrialState.WAITING or reached(t) < plan.top:
      continue
    metric = t.user_attrs["rungs"][-1][2]
    metric = math.nan if metric is None else float(metric)
    if math.isfinite(metric):
      state, values = TrialState.COMPLETE, [metric, float(t.user_attrs["bytes"][sw.settings.policy]["total"])]
    else:
      state, values = TrialState.FAIL, None
      led.set_user_attr(t._trial_id, "error", f"validation {t.user_attrs.get('metric') or sw.metric} is {metric}")
    ledger_lib.retry(led.storage.set_trial_state_values, t._trial_id, state, values=values)
    sw.log(f"trial {t.number}: its worker died recording its top-rung result; {state.name.lower()} from it")
    done = True
  return done


def search_until(state: dict, plan: asha.Plan, search: list[FrozenTrial], recs: list[asha.Record],
                 runs: Callable[[FrozenTrial], int] | None = None) -> float:
  """When the search phase ends: the plan's estimate until a top-rung run has been measured, then the
  deadline less the margin and the final phase at measured costs, spread over the workers (never less than
  its longest item): each pick (asha.final_picks) costs its own measured wall time (all its calls) times
  `runs(pick)`, the trainings its extra seeds take (seed_runs; None: one per seed); a missing pick or
  close-out run costs the longest top-rung trial's. Measured on 45-minute sweeps: every pick priced at the
  longest trial's time ended one at 36.4 min; seeds priced one per run ended one at 38.0 (they trained as
  one group, 0.41-1.04x the pick's wall over 13 picks)."""
  if not math.isfinite(state["deadline"]):
    return state["search_until"]
  wall = {t.number: t.user_attrs["time_spent"]["wall_s"] for t in search if t.state == TrialState.COMPLETE
          and reached(t) >= plan.top and (t.user_attrs.get("time_spent") or {}).get("wall_s")}
  if not wall:
    return state["search_until"]
  by_number = {t.number: t for t in search}
  n_runs = runs or (lambda t: plan.final_seeds - 1)
  slowest = max(wall, key=wall.get)
  longest, longest_runs = wall[slowest], n_runs(by_number[slowest])
  topped = {plan.band(t.user_attrs["bytes_total"]) for t in search
            if t.state == TrialState.COMPLETE and reached(t) >= plan.top}
  picks = asha.final_picks(plan, recs, state["eps"])
  items = [wall[r.trial] * n_runs(by_number[r.trial]) if r.trial in wall else longest * longest_runs
           for r in picks]
  items += [longest * longest_runs] * max(0, plan.bands - len(picks)) + [longest] * (plan.bands - len(topped))
  need = max(sum(items) / max(1, state.get("workers", 1)), max(items, default=0.0))
  margin = 0.05 * (state["deadline"] - state["started"])  # measured, a smaller margin than the plan's 10 %
  return state["deadline"] - margin - need


def busy(led) -> bool:
  """Whether any trial is training or waiting to be trained (paused trials are neither)."""
  return any(t.state == TrialState.RUNNING or claimable(t)
             for t in led.trials((TrialState.RUNNING, TrialState.WAITING)))


def finish(sw, led, state: dict) -> None:
  """The end of the sweep: trials still paused at a lower rung become PRUNED."""
  plan = asha.Plan.from_dict(state["plan"])
  with led.lock():
    if busy(led):
      return
    for t in led.trials((TrialState.WAITING,)):
      got = reached(t)
      msg = f"not promoted past rung {got} of {plan.top} ({plan.rung_steps[max(got, 0)]} steps)"
      led.set_user_attr(t._trial_id, "error", msg)
      led.set_user_attr(t._trial_id, "pruned_at", plan.rung_steps[max(got, 0)])
      ledger_lib.retry(led.storage.set_trial_state_values, t._trial_id, TrialState.PRUNED)


# Rung fields a trainer may lack (set only where its config has them): not every trainer buckets lengths.
OPTIONAL_RUNG_FIELDS = ("bucket_steps",)


def rung_fields(state: dict, tg: int, eval_every: int, patience: int) -> dict[str, Any]:
  """The trainer fields of a trial's next call to target rung `tg`: the schedule spans R_max, it pauses
  at its target rung;
  its batch widths are priced over the steps a trial trains on average (bucket_steps: most stop at rung
  0, so pricing them over R_max bought compiles that most never paid back). The same for every call of
  every trial, so a promoted trial keeps its ladder."""
  plan = asha.Plan.from_dict(state["plan"])
  return {"steps": plan.rung_steps[plan.top], "stop_at": 0 if tg >= plan.top else plan.rung_steps[tg],
          "eval_every": eval_every, "log_every": min(50, eval_every), "patience": patience,
          "bucket_steps": int(round(plan.expected_steps))}


def with_rung(sw, cfg, rung: int):
  """cfg with the asha fields of a call to `rung` (rung_fields); as it is without asha."""
  if sw.asha is not None:
    fields = rung_fields(sw.asha, rung, eval_every(sw.asha), sw.settings.patience)
    for key, value in fields.items():
      if key in cfg or key not in OPTIONAL_RUNG_FIELDS:
        configs.set_field(cfg, key, value)
  return cfg


def eval_every(state: dict) -> int:
  """Validations once an epoch, or every half of rung 0 where that is sooner: at least two per rung, the
  same for every trial. Every half of rung 0 alone was 1.7 epochs, too coarse for the best checkpoint of
  a model that peaks after 2-4 epochs and then overfits (the scratch recipe's 10x token table). A study
  planned before `epoch_steps` was recorded keeps its half-rung interval."""
  plan = asha.Plan.from_dict(state["plan"])
  half = max(1, plan.rung_steps[0] // 2)
  epoch = int(state.get("epoch_steps") or 0)
  return min(half, epoch) if epoch else half


def rung_result(t: FrozenTrial, out: dict, metric: str, last: dict | None = None) -> list:
  """The [rung, steps, metric, loss] row a finished call adds to the trial's `rungs`: the best validation
  metric so far, and the loss of the last validation (`last`, the reporter's; the best-metric
  checkpoint's loss may be from long before the rung when the metric sits at chance)."""
  v = out.get("validation") or {}
  loss = (last or {}).get("loss", v.get("loss"))
  return [target(t) or 0, out.get("steps"), v.get(metric), loss]
