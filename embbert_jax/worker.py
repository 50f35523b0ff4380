"""One sweep worker: take trials from the shared ledger, train them, record their outcomes, until the study
is done (`run_sweep`, the whole command for one process; engine.py validates the sweep first).

A worker repeatedly claims a trial from the ledger (ledger.py), trains it with the trainer plug-in
(engine.Trainer; train.train_and_evaluate by default) and records the outcome, until the study holds
--max-trials trials (all workers together) or no fitting configuration is left; then it writes the frontier
table, trials.csv/.jsonl and frontier.png to --out (engine.summarize). Which configuration comes next is
propose.py's business; the memory budget is a hard filter applied before anything trains (space.py).

Grouped training: a space with a train grid (space.train_grid, e.g. seeds and learning rates) gives every
config several member trials, each its own ledger trial (own hash, config, workdir and trials.csv row).
A worker claims the waiting members of one config together, up to trainer.max_group_size(cfg) of those
with equal trainer.group_key(cfg), under the study lock, and trains them with one trainer.train_group
call (one vmapped program), then records each member's outcome: complete, pruned, or failed (a NaN
member fails alone). --max-trials counts member trials. A trainer without train_group, --no-group, or a
lone trial trains with train_and_evaluate, one at a time. If the group program itself raises (not one
member), its members go back to the queue marked to train alone. pareto.py says how the frontier
scores a config with several trials (mean over seeds, best over the other knobs).

Early stopping is early_stop.py's rule; here a setting's last live member in the group to report a step
judges the setting's mean, and a stopped setting's members stop at their next validation (_reporter).

Every trial records its config, parameters, weight/activation/total bytes under every dtype policy,
validation and test metrics, train time, steps/s, status (complete/pruned/failed, with the error of a
failed one) and its validation curve. A NaN loss (train.TrainingDiverged) or any other exception of one
config fails that trial and the sweep goes on; SIGTERM/Ctrl-C and a dead worker's stale heartbeat put the
trial (every unfinished member of a group) back in the queue (a preemption is not a failure: the handlers
only set a flag, acted on at the next training step, validation report or trial boundary: signals.py); a
trial whose workdir another process still holds goes back too (files.FolderBusy); a dataset
that cannot be fetched stops the worker. Compiled programs are reused through JAX's persistent
compilation cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import ml_collections
from optuna.trial import FrozenTrial, TrialState

from embbert_jax import configs, data, early_stop, hostmem, ledger as ledger_lib, memory, pareto, propose
from embbert_jax import compile_ahead, scheduler
from embbert_jax import space as space_lib
from embbert_jax.engine import (PrunedTrial, Preempted, Sweep, member_attrs, member_hash, one_line,
                                open_ledger, prepare, say, summarize, wandb_mode)
from embbert_jax import signals
from embbert_jax.files import FolderBusy, write_json_atomic


def _claim_group(sw: Sweep, led: ledger_lib.Ledger, waiting: list[FrozenTrial]) -> list[FrozenTrial]:
  """Claims the lowest-numbered waiting trial and the waiting members of its config that can train with it
  (equal trainer.group_key), up to scheduler.group_limit (call with the lock held)."""
  first, group = waiting[0], waiting[:1]
  mates = [t for t in waiting[1:] if pareto.shape_of(t.user_attrs) == pareto.shape_of(first.user_attrs)
           and not t.system_attrs.get(ledger_lib.SOLO)]
  cfg = scheduler.trial_config(sw, first) if mates and not first.system_attrs.get(ledger_lib.SOLO) else None
  limit = scheduler.group_limit(sw, cfg) if cfg is not None else 1
  if limit > 1:
    key = getattr(sw.trainer, "group_key", None)
    group += [t for t in mates if key is None or key(scheduler.trial_config(sw, t)) == key(cfg)][:limit - 1]
  claimed = [led.claim(t._trial_id) for t in group]
  return [t for t in claimed if t is not None]


def _propose(sw: Sweep, trials: list[FrozenTrial],
             taken: set[str]) -> tuple[space_lib.Candidate | None, dict]:
  """The next config to train (propose.py), as a candidate and the sampler's attrs for its trials."""
  s = sw.settings
  limit = math.ceil(s.max_trials / len(sw.members))  # the grid's prefix, in configs
  if s.strategy == "grid":
    return propose.next_in_grid(sw.ordered, taken, limit, s.policy), {}
  cand, attrs = propose.from_sampler(s.strategy, sw.space, trials, sw.fitting, taken, sw.num_labels, s.seed,
                                     limit)
  if cand is None:
    cand = propose.next_in_grid(sw.ordered, taken, limit, s.policy)
    if cand is not None:
      sw.log(f"the {s.strategy} sampler kept proposing configs that are taken or do not fit; "
             "using the next grid config")
  return cand, attrs


def next_trials(sw: Sweep, led: ledger_lib.Ledger) -> list[FrozenTrial]:
  """Under the study lock: requeue stale trials, then claim waiting trials or add the next config's member
  trials and claim them; [] when there is nothing to train now."""
  s = sw.settings
  with led.lock():
    for number, outcome in led.requeue_stale(s.max_attempts):
      sw.log(f"trial {number}: its worker stopped sending heartbeats; {outcome}")
    waiting = sorted(led.trials((TrialState.WAITING,)), key=lambda t: t.number)
    if waiting:
      return _claim_group(sw, led, waiting)
    trials = led.trials()
    if len(trials) >= s.max_trials:
      return []
    present: dict[str, set[str]] = {}  # config hash -> its member hashes in the ledger
    for t in trials:
      present.setdefault(pareto.shape_of(t.user_attrs), set()).add(t.user_attrs.get("hash"))
    taken = {h for h, got in present.items() if len(got) >= len(sw.members)}
    # A config whose members were cut short by --max-trials is completed before a new one is proposed.
    cand = next((sw.fitting[h] for h in present if h not in taken and h in sw.fitting), None)
    attrs: dict[str, Any] = {}
    if cand is None:
      cand, attrs = _propose(sw, trials, taken)
    if cand is None:
      return []
    new = [k for k in sw.members if member_hash(cand.hash, k) not in present.get(cand.hash, set())]
    dists = space_lib.distributions(sw.space)
    for knobs in new[:s.max_trials - len(trials)]:  # --max-trials counts member trials
      led.add_waiting(cand.optuna_params, dists, member_attrs(cand, knobs, sw.init),
                      {**attrs, ledger_lib.HASH: member_hash(cand.hash, knobs)})
    return _claim_group(sw, led, sorted(led.trials((TrialState.WAITING,)), key=lambda t: t.number))


@dataclasses.dataclass
class Member:
  """One claimed trial being trained (alone or in a group)."""
  trial: FrozenTrial
  cfg: Any
  workdir: Path
  mem: int
  curve: dict[int, float]  # step -> validation metric, earlier attempts included
  recorded: bool = False
  last: dict | None = None  # the latest validation this call reported

  @property
  def tid(self) -> int:
    return self.trial._trial_id


def _member(sw: Sweep, trial: FrozenTrial) -> Member:
  a, cfg = trial.user_attrs, scheduler.trial_config(sw, trial)
  # Absolute: orbax refuses relative checkpoint paths. Where a call pauses is not part of the run's name.
  run = {k: v for k, v in cfg.to_dict().items() if k != "stop_at"}
  workdir = (sw.out / "trials" / f"{trial.number:04d}-{a['hash']}-{configs.config_hash(run)[:6]}").resolve()
  # A resumed trial keeps the validations of its earlier attempts (the trainer reports only new ones).
  return Member(trial, cfg, workdir, a["bytes"][sw.settings.policy]["total"],
                {int(k): v for k, v in a.get("curve", [])})


@dataclasses.dataclass
class Group:
  """What the report callbacks of one training call share."""
  members: list[Member]
  t0: float
  pruned_exc: type
  snapshot: dict = dataclasses.field(default_factory=dict)  # the ledger's curves at the latest step
  doomed: dict[str, str] = dataclasses.field(default_factory=dict)  # setting key -> why it was stopped


def _standing(sw: Sweep, led: ledger_lib.Ledger, m: Member, grp: Group, step: int):
  """early_stop.standing for member m: the ledger is read once per validation step of a group, not once
  per member; the group's own curves come from memory, fresher than that read."""
  if step not in grp.snapshot:
    grp.snapshot.clear()
    grp.snapshot[step] = {t._trial_id: (t.user_attrs, {int(k): v for k, v in t.user_attrs["curve"]})
                          for t in led.trials((TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                          if t.user_attrs.get("curve")}
  trials = {**grp.snapshot[step], **{g.tid: (g.trial.user_attrs, g.curve) for g in grp.members if g.curve}}
  del trials[m.tid]
  return early_stop.standing(trials.values(), m.trial.user_attrs, m.curve[step], step, sw.settings.policy)


def _reporter(sw: Sweep, led: ledger_lib.Ledger, m: Member, grp: Group) -> Callable:
  """The trainer's report callback of one member: records its curve, stops it when hopeless.

  The decision is per setting: the last of a setting's live members in the group to report a step judges
  the setting's mean; a doomed setting's other members stop at their next validation. A stopped trial is
  recorded PRUNED here, before the trainer unwinds. The last validation (step == --steps) never stops a
  trial: one that ran all its steps is complete, however it compares.
  """
  es, steps = sw.space.early_stop, sw.settings.steps
  key = pareto.setting_key(m.trial.user_attrs)

  def stop(step: int, msg: str):
    _record(sw, led, [(m, {"status": "pruned", "error": msg, "pruned_at": step})], grp)
    return grp.pruned_exc(msg)

  def report(step: int, metrics: dict) -> None:
    signals.check()  # a safe point inside any trainer: a requested stop requeues the trial
    step = int(step)
    m.last = dict(metrics)
    value = float(metrics.get(sw.metric, metrics.get("mcc", math.nan)))
    m.curve[step] = value
    led.set_user_attr(m.tid, "curve", sorted(m.curve.items()))
    led.report(m.tid, step, value)
    if sw.asha is not None or not (es.enabled and es.after * steps <= step < steps):
      return  # asha: promotion, not stopping
    if key in grp.doomed:
      raise stop(step, grp.doomed[key])
    live = [g for g in grp.members if not g.recorded and pareto.setting_key(g.trial.user_attrs) == key]
    if not math.isfinite(value) or any(step not in g.curve for g in live):
      return  # the setting's last member to report this step decides
    peers, mine = _standing(sw, led, m, grp, step)
    if early_stop.hopeless(peers, m.mem, step, mine, es):
      grp.doomed[key] = (f"hopeless at step {step}: {es.min_better}+ no-larger trials beat {mine:.4f} "
                         f"by {es.margin}")
      raise stop(step, grp.doomed[key])
  return report


def _train_one(sw: Sweep, m: Member, report: Callable, pruned_exc) -> dict:
  """train_and_evaluate as one member's train_group outcome (statuses complete/pruned/failed)."""
  try:
    return {**sw.trainer.train_and_evaluate(m.cfg, m.workdir, report=report), "status": "complete"}
  except (pruned_exc, PrunedTrial) as e:
    return {"status": "pruned", "error": str(e), "pruned_at": max(m.curve) if m.curve else None}
  except (data.DataError, FolderBusy):
    raise
  except Exception as e:  # NaN loss (TrainingDiverged) or any bug in one config: record it, go on
    return {"status": "failed", "error": one_line(e)}


_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


_RESULT_KEYS = ("validation", "test", "metric", "best_step", "steps", "train_time_s", "steps_per_s",
                "tokens_per_s", "seq_len", "widths")


def _time_spent(before: dict | None, timing: dict | None, wall: float, share: int) -> dict[str, float]:
  """A trial's wall time over all its trainer calls (rungs, resumptions), split as loop.fit measures it
  (pareto.TIME_PARTS: compile, initial params, steps, evaluation, checkpoints; `wall` covers data and
  setup too). Members of one group call count their share of it."""
  out = dict(before or {})
  for k in pareto.TIME_PARTS:
    out[k] = out.get(k, 0.0) + float((timing or {}).get(k, 0.0)) / share
  out["wall_s"] = out.get("wall_s", 0.0) + wall / share
  out["calls"] = int(out.get("calls", 0)) + 1
  return out


def _record(sw: Sweep, led: ledger_lib.Ledger, outcomes: list[tuple[Member, dict]], grp: Group) -> None:
  """Writes the members' outcomes (train_group's dicts) to the ledger, under one lock, and logs them.

  group_size: how many trials shared the training call (and its train_time_s)."""
  lines = []
  with led.lock():
    for m, out in outcomes:
      if m.recorded:
        continue  # pruned from its report callback
      m.recorded = True
      status = out.get("status", "complete")
      values, attrs = None, {"train_time_s": time.time() - grp.t0, "error": out.get("error") or status}
      if status == "complete":
        metric = out.get("metric", sw.metric)
        value = float(out["validation"][metric])
        attrs = {k: out.get(k) for k in _RESULT_KEYS}
        if math.isfinite(value):
          values = [value, float(m.mem)]
        else:
          status, attrs["error"] = "failed", f"validation {metric} is {value}"
      elif status == "pruned":
        attrs["pruned_at"] = out.get("pruned_at") or (max(m.curve) if m.curve else None)
      attrs.update(worker=led.worker, group_size=len(grp.members), peak_rss_mb=round(hostmem.peak_rss_mb()),
                   time_spent=_time_spent(m.trial.user_attrs.get("time_spent"), out.get("timing"),
                                          time.time() - grp.t0, len(grp.members)))
      if sw.asha is not None and status == "complete":
        if (out.get("timing") or {}).get("step_s"):  # a call that trained no step measured no rate
          attrs["timing"] = out["timing"]
        row = scheduler.rung_result(m.trial, out, attrs.get("metric") or sw.metric, m.last)
        # Last in attrs, so written last: a trial whose rungs hold the result holds all of it (scheduler.settle).
        attrs["rungs"] = [*m.trial.user_attrs.get("rungs", []), row]
        top = scheduler.asha.Plan.from_dict(sw.asha["plan"]).top
        if row[0] < top and out.get("plateau"):  # converged below the top: done, not paused
          led.set_system_attr(m.tid, ledger_lib.TARGET, top)
        elif row[0] < top:  # a lower rung: paused until promoted
          if led.pause(m.tid, attrs):
            lines.append(f"trial {m.trial.number} paused at rung {row[0]} ({row[1]} steps): validation "
                         f"{attrs['metric']} {values[0]:.4f}" if values else f"trial {m.trial.number} paused")
          else:
            lines.append(f"trial {m.trial.number}: another worker took it over meanwhile; this result is dropped")
          continue
      if not led.finish(m.tid, _STATES.get(status, TrialState.FAIL), values, attrs):
        lines.append(f"trial {m.trial.number}: another worker took it over meanwhile; this result is dropped")
      elif values is not None:
        test = (attrs.get("test") or {}).get(attrs.get("metric") or sw.metric)
        lines.append(f"trial {m.trial.number} complete: validation {attrs['metric']} {values[0]:.4f}, test "
                     f"{test if test is None else round(test, 4)}, {attrs.get('train_time_s') or 0:.0f} s")
      else:
        lines.append(f"trial {m.trial.number} {status}: {attrs['error']}")
  for line in lines:
    sw.log(line)


def _requeue(sw: Sweep, led: ledger_lib.Ledger, members: list[Member], reason: str, solo: bool = False):
  with led.lock():
    for m in members:
      if not m.recorded:
        if solo:
          led.set_system_attr(m.tid, ledger_lib.SOLO, True)
        led.requeue(m.tid, reason)


def run_group(sw: Sweep, led: ledger_lib.Ledger, trials: list[FrozenTrial]) -> int:
  """Trains claimed member trials of one config (one program: trainer.train_group; or one trial:
  train_and_evaluate) and records every member's outcome; returns how many it recorded."""
  s = sw.settings
  members = [_member(sw, t) for t in trials]
  grp = Group(members, time.time(), getattr(sw.trainer, "Pruned", None) or PrunedTrial)
  reports = [_reporter(sw, led, m, grp) for m in members]
  a = trials[0].user_attrs
  # Restarts after a preemption or a dead worker (a promoted trial's next rung is not a new attempt).
  attempt = 1 + max(len(t.system_attrs.get(ledger_lib.PREEMPTED, [])) for t in trials)
  who = (f"trial {trials[0].number}" if len(trials) == 1 else
         f"trials {', '.join(str(t.number) for t in trials)} together")
  knobs = "; ".join(", ".join(f"{k}={v}" for k, v in t.user_attrs.get("train", {}).items()) for t in trials)
  sw.log(f"{who} start: {a['describe']}, {memory.format_bytes(members[0].mem)} {s.policy}, "
         f"{a['params']:,} params" + (f" ({knobs})" if knobs.strip("; ") else "") +
         (f" (attempt {attempt})" if attempt > 1 else "") +
         (f", rung {scheduler.target(trials[0]) or 0} to {members[0].cfg.stop_at or members[0].cfg.steps} steps"
          if sw.asha is not None else ""))
  # The trials' wandb runs (runlog.py): in the sweep's folder, as trials of this family and policy.
  wandb_env = _environ(WANDB_DIR=str(sw.out.resolve()), WANDB_JOB_TYPE="trial",
                       WANDB_TAGS=",".join(t for t in (a.get("family"), s.policy) if t))
  # The heartbeat lasts until the outcomes are recorded: _record waits for the study lock, and a trial
  # whose heartbeat stopped while its worker waited there would be reclaimed as stale (and trained again).
  with led.heartbeat([m.tid for m in members]):
    try:
      with wandb_env:
        if len(members) == 1:
          outcomes = [_train_one(sw, members[0], reports[0], grp.pruned_exc)]
        else:
          outcomes = sw.trainer.train_group([m.cfg for m in members], [m.workdir for m in members],
                                            report=lambda i, step, metrics: reports[i](step, metrics))
    except (Preempted, KeyboardInterrupt):
      _requeue(sw, led, members, "worker stopped (SIGTERM/SIGINT)")
      sw.log(f"{who}: stopped; back in the queue for the next worker")
      raise
    except data.DataError:
      _requeue(sw, led, members, "data unavailable")
      raise
    except FolderBusy as e:  # a worker the ledger gave up on still trains it: wait for it, do not fail it
      _requeue(sw, led, members, f"workdir in use: {one_line(e)}")
      sw.log(f"{who}: {one_line(e)}; back in the queue")
      _sleep(sw.settings.heartbeat_interval)
      return 0
    except Exception as e:  # the group program itself broke (not one member): each member retries alone
      _requeue(sw, led, members, f"group training failed: {one_line(e)}", solo=True)
      sw.log(f"{who}: group training failed ({one_line(e)}); the trials go back to the queue, to train alone")
      return sum(m.recorded for m in members)
    _record(sw, led, list(zip(members, outcomes)), grp)
  hostmem.trim_heap()  # the trial's freed buffers go back to the OS, not into the next trial's peak
  return len(members)


def work(sw: Sweep, led: ledger_lib.Ledger) -> int:
  """The worker loop; returns the number of trials this worker ran."""
  if sw.asha is not None:
    return _work_asha(sw, led)
  ran = 0
  while True:
    signals.check()  # between trials: a requested stop ends the worker here
    trials = next_trials(sw, led)
    if trials:
      ran += run_group(sw, led, trials)
      continue
    if led.trials((TrialState.RUNNING, TrialState.WAITING)):
      # Others are still training: wait, so that a trial whose worker dies is still retried.
      _sleep(min(5.0, sw.settings.heartbeat_interval))
      continue
    return ran


def _work_asha(sw: Sweep, led: ledger_lib.Ledger) -> int:
  """The multi-fidelity worker loop (scheduler.py decides); returns the trainer calls this worker made."""
  ran = 0
  ahead = compile_ahead.CompileAhead(sw, led)
  try:
    while True:
      signals.check()
      trials = scheduler.next_trials(sw, led, sw.asha, _claim_group)
      if trials:
        ahead.wait_for(trials)
        ahead.start()
        ran += run_group(sw, led, trials)
        continue
      if scheduler.busy(led):
        _sleep(min(2.0, sw.settings.heartbeat_interval))  # others train: their results may unlock work
        continue
      if scheduler.next_trials(sw, led, sw.asha, _claim_group):  # pragma: no cover - raced with a finish
        continue
      scheduler.finish(sw, led, sw.asha)
      return ran
  finally:
    ahead.close()


@contextlib.contextmanager
def _environ(**values: str):
  """These environment variables while the block runs, the previous values afterwards."""
  before = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in before.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _sleep(seconds: float) -> None:
  """time.sleep that ends early, raising Preempted, once a stop is requested."""
  end = time.monotonic() + seconds
  while time.monotonic() < end:
    signals.check()
    time.sleep(min(0.2, max(0.0, end - time.monotonic())))
  signals.check()


def _enable_compilation_cache() -> None:
  """JAX's persistent compilation cache (in the data cache folder) if the trainer uses JAX."""
  if "jax" not in sys.modules:
    return
  import jax
  if not jax.config.jax_compilation_cache_dir:
    from embbert_jax import train
    train.enable_compilation_cache()


def run_sweep(settings: ml_collections.ConfigDict, trainer: Any = None, log: Callable = say,
              summary: bool = True) -> dict[str, Any]:
  """Runs one worker of the sweep to the end; returns summarize()'s dict (plus "ran": trials run here).

  `trainer`: a module-like object with get_config() and train_and_evaluate(cfg, workdir, report); None
  imports settings.trainer (embbert_jax.train). Several processes may call this on one study at once.
  """
  started = time.time()
  sw = prepare(settings, trainer, log)
  _enable_compilation_cache()
  led = open_ledger(sw)
  s = sw.settings
  sw.out.mkdir(parents=True, exist_ok=True)
  write_json_atomic(sw.out / "sweep.json", {
      **s.to_dict(), "storage": ledger_lib.redact(sw.storage_url), "budget_bytes": sw.budget,
      "min_budget_bytes": sw.min_budget, "fitting_configs": len(sw.ordered)}, default=str)
  within = (f"{memory.format_bytes(sw.min_budget)}..{memory.format_bytes(sw.budget)}" if sw.min_budget
            else memory.format_bytes(sw.budget))
  log(f"study {s.study} ({ledger_lib.redact(sw.storage_url)}): {len(sw.ordered)} configs of space "
      f"{sw.space.name!r} fit {within} under {s.policy}; " + (
          f"multi-fidelity (asha){', time budget ' + s.time_budget if s.time_budget else ''}"
          if s.scheduler == "asha" else f"strategy {s.strategy}, at most {s.max_trials} trials of {s.steps} steps")
      + f" (worker {led.worker})")
  if s.scheduler == "asha":
    sw.asha = scheduler.setup(sw, led, started)
  ran = work(sw, led)
  out = {"ran": ran}
  if summary:
    out.update(summarize(led, sw.out, led.study_attrs().get("settings", {}), wandb_mode(s.wandb), log))
  return out
