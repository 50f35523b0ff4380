"""The sweep engine: validate a sweep, then run one worker over the shared ledger until the study is done.

`run_sweep(settings, trainer=...)` is the whole command for one process (`python -m embbert_jax.sweep`,
see sweep.py for the CLI and several workers). A worker repeatedly takes a trial from the ledger
(ledger.py), trains it with the training code (train.train_and_evaluate, or any `trainer` module with the
same get_config/train_and_evaluate API, e.g. a fake one in tests) and records the outcome, until the
study holds --max-trials trials (all workers together) or no fitting configuration is left; then it
writes the frontier table, trials.csv/.jsonl and frontier.png to --out and, once per finished sweep, a
wandb summary run. Which configuration comes next is propose.py's business; the memory budget is a hard
filter applied before anything trains (space.py).

Early stopping (Pareto-aware successive halving): each trial validates `evals` times; from `after` x
steps on, a trial is stopped (PRUNED) when at least `min_better` other trials that need no more memory
scored at least `margin` higher at the same step. A trial that smaller models already beat cannot reach
the frontier, while the smallest models, which the frontier needs however weak, are never stopped by
larger ones. Optuna's pruners cannot do this: they rank a single objective, and multi-objective studies
have no trial.report.

Every trial records its config, parameters, weight/activation/total bytes under every dtype policy,
validation and test metrics, train time, steps/s, status (complete/pruned/failed, with the error of a
failed one) and its validation curve. A NaN loss (train.TrainingDiverged) or any other exception of one
config fails that trial and the sweep goes on; SIGTERM/Ctrl-C and a dead worker's stale heartbeat put the
trial back in the queue (a preemption is not a failure); a dataset that cannot be fetched stops the worker.

Compiled programs are reused through JAX's persistent compilation cache: a retried or resumed trial, and
any trial whose shapes were compiled before (by any worker on the machine), loads instead of compiling.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import ml_collections
from optuna.trial import FrozenTrial, TrialState

from embbert_jax import configs, data, ledger as ledger_lib, memory, pareto, propose
from embbert_jax import space as space_lib

STRATEGIES = ("grid", "tpe", "nsga2")


def get_config() -> ml_collections.ConfigDict:
  """Settings of one sweep: the command-line flags of sweep.py, where their help is."""
  c = ml_collections.ConfigDict()
  c.budget = ""  # required: memory budget string (memory.parse_budget)
  c.min_budget = ""
  c.policy = "fp32"  # memory.POLICIES
  c.task = "rt_polarity"
  c.space = "default"  # sweeps/<name>.py or a path
  c.strategy = "grid"
  c.max_trials = 12  # the study's total over all workers
  c.steps = 400  # training steps per trial (about 1.5 epochs of rt_polarity at batch 32)
  c.pretrain_steps = 0
  c.seed = 0
  c.storage = ""  # "" = sqlite:///<out>/ledger.db
  c.study = ""  # "" = <space>-<task>-<budget>-<policy>
  c.out = ""  # "" = runs/sweeps/<study>
  c.wandb = True  # one run per trial + a summary run (offline without an API key)
  c.wandb_project = "embbert_jax"
  c.heartbeat_interval = 20  # seconds between a running trial's heartbeats
  c.grace_period = 120  # a RUNNING trial silent this long is requeued
  c.max_attempts = 3  # worker deaths during one trial before the trial counts as failed
  c.trainer = "embbert_jax.train"  # module (or .py file) with get_config and train_and_evaluate
  return c


class SweepError(Exception):
  """Bad input or an impossible sweep; the message is one line."""


class PrunedTrial(Exception):
  """Raised by the report callback when the trainer defines no Pruned exception of its own."""


class Preempted(BaseException):
  """SIGTERM/SIGINT during a trial: the trial goes back to the queue (BaseException: trainers that catch
  Exception must not swallow it)."""


@dataclasses.dataclass
class Sweep:
  """A resolved, validated sweep (nothing written yet)."""
  settings: ml_collections.ConfigDict
  space: ml_collections.ConfigDict
  budget: int
  min_budget: int
  ordered: list[space_lib.Candidate]  # fitting candidates, memory-spread order
  trainer: Any
  num_labels: int
  metric: str
  out: Path
  storage_url: str
  identity: dict[str, Any]
  log: Callable[[str], None]

  @property
  def fitting(self) -> dict[str, space_lib.Candidate]:
    return {c.hash: c for c in self.ordered}


def say(msg: str) -> None:
  print(f"[sweep] {msg}", file=sys.stderr, flush=True)


def load_trainer(spec: str):
  """The trainer module: a dotted module name or a .py file."""
  if spec.endswith(".py"):
    modspec = importlib.util.spec_from_file_location(f"embbert_sweep_trainer_{Path(spec).stem}", spec)
    module = importlib.util.module_from_spec(modspec)
    modspec.loader.exec_module(module)
    return module
  return importlib.import_module(spec)


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _set_dotted(cfg, key: str, value: Any) -> None:
  node, parts = cfg, key.split(".")
  for p in parts[:-1]:
    node = node[p]
  if parts[-1] not in node:
    raise KeyError(key)
  node[parts[-1]] = value


def prepare(settings: ml_collections.ConfigDict, trainer: Any = None, log: Callable = say) -> Sweep:
  """Validates every input (budget, space, task, trainer config) before the ledger is touched."""
  s = settings
  if not s.budget:
    raise SweepError("--budget is required, e.g. --budget 2MB (" + memory.BUDGET_FORMS + ")")
  budget = memory.parse_budget(s.budget)
  min_budget = memory.parse_budget(s.min_budget) if s.min_budget else 0
  if s.policy not in memory.POLICIES:
    raise SweepError(f"unknown dtype policy {s.policy!r}; known: {', '.join(memory.POLICIES)}")
  if s.strategy not in STRATEGIES:
    raise SweepError(f"unknown strategy {s.strategy!r}; known: {', '.join(STRATEGIES)}")
  if s.max_trials < 1 or s.steps < 1 or s.pretrain_steps < 0:
    raise SweepError("--max-trials and --steps must be >= 1, --pretrain-steps >= 0")
  space_cfg = space_lib.load(s.space)
  trainer = trainer if trainer is not None else load_trainer(s.trainer)
  num_labels, metric = space_cfg.num_labels, "mcc"
  if getattr(trainer, "NEEDS_DATA", True):
    task = data.load_task(s.task)  # DataError here, before the ledger exists
    num_labels, metric = task.num_labels, task.metric
  cands = space_lib.enumerate_space(space_cfg, num_labels)
  if not cands:
    raise SweepError(f"search space {space_cfg.name!r} has no buildable configuration")
  fitting = space_lib.fits(cands, s.policy, budget, min_budget)
  if not fitting:
    lo = space_lib.smallest(cands, s.policy)
    hi = max(cands, key=lambda c: c.total(s.policy))
    if budget < lo.total(s.policy):
      raise SweepError(f"no configuration of space {space_cfg.name!r} fits {memory.format_bytes(budget)} "
                       f"under {s.policy}: the smallest is {lo.describe()} at "
                       f"{memory.format_bytes(lo.total(s.policy))} ({lo.params:,} parameters)")
    raise SweepError(f"no configuration of space {space_cfg.name!r} lies between "
                     f"{memory.format_bytes(min_budget)} and {memory.format_bytes(budget)} under {s.policy} "
                     f"(the space spans {memory.format_bytes(lo.total(s.policy))} to "
                     f"{memory.format_bytes(hi.total(s.policy))})")
  study = s.study or _slug(f"{space_cfg.name}-{Path(str(s.task)).stem}-"
                           f"{memory.format_bytes(budget).replace(' ', '')}-{s.policy}")
  out = Path(s.out or Path("runs") / "sweeps" / study)
  storage = s.storage or f"sqlite:///{out / 'ledger.db'}"
  if "://" not in storage:
    storage = f"sqlite:///{storage}"  # a bare file path
  with s.unlocked():
    s.study, s.storage = study, storage
  # What must not change when a study is resumed: it would make its trials incomparable.
  identity = dict(space=space_cfg.name, space_digest=_digest(space_cfg.to_dict()), task=str(s.task),
                  policy=s.policy, steps=s.steps, pretrain_steps=s.pretrain_steps, seed=s.seed)
  sw = Sweep(s, space_cfg, budget, min_budget, space_lib.spread_order(fitting, s.policy), trainer,
             num_labels, metric, out, storage, identity, log)
  trainer_config(sw, fitting[0].model, number=0, hash_="0" * 12)  # a bad `train` override fails here
  return sw


def trainer_config(sw: Sweep, model: ml_collections.ConfigDict, number: int, hash_: str):
  s = sw.settings
  cfg = sw.trainer.get_config()
  cfg.model = model
  eval_every = max(1, s.steps // max(1, sw.space.evals))
  fields = {"task": str(s.task), "seed": s.seed, "steps": s.steps, "eval_every": eval_every,
            "pretrain.steps": s.pretrain_steps, "wandb.group": s.study,
            "wandb.name": f"{s.study}-t{number:04d}-{hash_[:6]}",
            "wandb.mode": ("auto" if s.wandb else "disabled"), **configs.flatten_dict(sw.space.train.to_dict())}
  if "log_every" in cfg:
    fields["log_every"] = min(cfg.log_every, eval_every)
  if "wandb" in cfg and "project" in cfg.wandb:
    fields["wandb.project"] = s.wandb_project
  for key, value in fields.items():
    try:
      _set_dotted(cfg, key, value)
    except (KeyError, AttributeError):
      raise SweepError(f"the trainer's config has no field {key!r} "
                       f"(space {sw.space.name!r}, train.*)") from None
    except TypeError as e:
      raise SweepError(f"bad value for training field {key!r}: {e}") from None
  return cfg


# ------------------------------------------------------------------------------------------- the worker


def open_ledger(sw: Sweep) -> ledger_lib.Ledger:
  s = sw.settings
  storage = ledger_lib.open_storage(sw.storage_url, s.heartbeat_interval, s.grace_period)
  led = ledger_lib.Ledger(storage, s.study, propose.DIRECTIONS)
  with led.lock():
    attrs = led.study_attrs()
    if "identity" not in attrs:
      led.set_study_attr("identity", sw.identity)
    elif attrs["identity"] != sw.identity:
      diff = ", ".join(f"{k}={attrs['identity'].get(k)!r} (now {v!r})" for k, v in sw.identity.items()
                       if attrs["identity"].get(k) != v)
      raise SweepError(f"study {s.study!r} was started with {diff}; resume it with the same settings "
                       "or pass a new --study name")
    led.set_study_attr("settings", {"study": s.study, "budget": sw.budget, "min_budget": sw.min_budget,
                                    "policy": s.policy, "metric": sw.metric, "task": str(s.task),
                                    "space": sw.space.name, "strategy": s.strategy,
                                    "max_trials": s.max_trials, "steps": s.steps})
  return led


def _candidate_attrs(c: space_lib.Candidate) -> dict[str, Any]:
  return {"family": c.family, "config": dict(c.point), "describe": c.describe(), "hash": c.hash,
          "model": c.model_fields, "params": c.params, "bytes": c.bytes}


def next_trial(sw: Sweep, led: ledger_lib.Ledger) -> FrozenTrial | None:
  """Under the study lock: requeue stale trials, then take a WAITING one or add the next proposal."""
  s = sw.settings
  with led.lock():
    for number, outcome in led.requeue_stale(s.max_attempts):
      sw.log(f"trial {number}: its worker stopped sending heartbeats; {outcome}")
    trial = led.pop()
    if trial is not None:
      return trial
    trials = led.trials()
    if len(trials) >= s.max_trials:
      return None
    taken = {t.user_attrs.get("hash") for t in trials}
    attrs: dict[str, Any] = {}
    if s.strategy == "grid":
      cand = propose.next_in_grid(sw.ordered, taken, s.max_trials, s.policy)
    else:
      cand, attrs = propose.from_sampler(s.strategy, sw.space, trials, sw.fitting, taken, sw.num_labels,
                                         s.seed, s.max_trials)
      if cand is None:
        cand = propose.next_in_grid(sw.ordered, taken, s.max_trials, s.policy)
        if cand is not None:
          sw.log(f"the {s.strategy} sampler kept proposing configs that are taken or do not fit; "
                 "using the next grid config")
    if cand is None:
      return None
    trial_id = led.add_waiting(cand.optuna_params, space_lib.distributions(sw.space), _candidate_attrs(cand),
                               {**attrs, ledger_lib.HASH: cand.hash})
    return led.claim(trial_id)


def hopeless(peers: list[tuple[int, dict[int, float]]], mine: int, step: int, value: float, es) -> bool:
  """Pareto early stopping: `min_better` peers of at most `mine` bytes beat `value` by `margin` at `step`."""
  better = sum(1 for size, curve in peers if size <= mine and curve.get(step, -math.inf) >= value + es.margin)
  return better >= es.min_better


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def run_trial(sw: Sweep, led: ledger_lib.Ledger, trial: FrozenTrial) -> str:
  """Trains one claimed trial and records its outcome; returns the final status."""
  s, a, tid = sw.settings, trial.user_attrs, trial._trial_id
  model = configs.model_config(**a["model"])
  mem = a["bytes"][s.policy]["total"]
  cfg = trainer_config(sw, model, trial.number, a["hash"])
  # Absolute: orbax refuses relative checkpoint paths.
  workdir = (sw.out / "trials" / f"{trial.number:04d}-{a['hash']}-{_digest(cfg.to_dict())[:6]}").resolve()
  es, steps = sw.space.early_stop, s.steps
  pruned_exc = getattr(sw.trainer, "Pruned", None) or PrunedTrial
  # A resumed trial keeps the validations of its earlier attempts (the trainer reports only new ones).
  curve: dict[int, float] = {int(k): v for k, v in a.get("curve", [])}
  attempt = trial.system_attrs.get(ledger_lib.ATTEMPTS, 1)
  sw.log(f"trial {trial.number} start: {a['describe']}, {memory.format_bytes(mem)} {s.policy}, "
         f"{a['params']:,} params" + (f" (attempt {attempt})" if attempt > 1 else ""))

  def report(step: int, metrics: dict) -> None:
    value = float(metrics.get(sw.metric, metrics.get("mcc", math.nan)))
    curve[int(step)] = value
    led.set_user_attr(tid, "curve", sorted(curve.items()))
    if es.enabled and step >= es.after * steps and step < steps and math.isfinite(value):
      peers = [(t.user_attrs["bytes"][s.policy]["total"], {int(k): v for k, v in t.user_attrs["curve"]})
               for t in led.trials((TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
               if t._trial_id != tid and t.user_attrs.get("curve")]
      if hopeless(peers, mem, int(step), value, es):
        raise pruned_exc(f"hopeless at step {step}: {es.min_better}+ no-larger trials beat {value:.4f} "
                         f"by {es.margin}")

  t0 = time.time()
  state, values, attrs = TrialState.COMPLETE, None, {}
  try:
    with led.heartbeat(tid):
      result = sw.trainer.train_and_evaluate(cfg, workdir, report=report)
    metric = result.get("metric", sw.metric)
    value = float(result["validation"][metric])
    attrs = {k: result.get(k) for k in ("validation", "test", "metric", "best_step", "steps", "train_time_s",
                                          "steps_per_s", "tokens_per_s", "seq_len")}
    if not math.isfinite(value):
      state, attrs["error"] = TrialState.FAIL, f"validation {metric} is {value}"
    else:
      values = [value, float(mem)]
  except (pruned_exc, PrunedTrial) as e:
    state, attrs = TrialState.PRUNED, {"pruned_at": max(curve) if curve else None, "error": str(e),
                                       "train_time_s": time.time() - t0}
  except (Preempted, KeyboardInterrupt):
    with led.lock():
      led.requeue(tid, "worker stopped (SIGTERM/SIGINT)")
    sw.log(f"trial {trial.number}: stopped; back in the queue for the next worker")
    raise
  except data.DataError:
    with led.lock():
      led.requeue(tid, "data unavailable")
    raise
  except Exception as e:  # NaN loss (TrainingDiverged) or any bug in one config: record it, go on
    state, attrs = TrialState.FAIL, {"error": _one_line(e), "train_time_s": time.time() - t0}
  attrs["worker"] = led.worker
  with led.lock():
    recorded = led.finish(tid, state, values, attrs)
  status = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}[state]
  if not recorded:
    sw.log(f"trial {trial.number}: another worker took it over meanwhile; this result is dropped")
  elif state == TrialState.COMPLETE:
    test = (attrs.get("test") or {}).get(attrs.get("metric") or sw.metric)
    sw.log(f"trial {trial.number} complete: validation {attrs['metric']} {values[0]:.4f}, test "
           f"{test if test is None else round(test, 4)}, {attrs.get('train_time_s') or 0:.0f} s")
  else:
    sw.log(f"trial {trial.number} {status}: {attrs.get('error')}")
  return status


def work(sw: Sweep, led: ledger_lib.Ledger) -> int:
  """The worker loop; returns the number of trials this worker ran."""
  ran = 0
  while True:
    trial = next_trial(sw, led)
    if trial is not None:
      run_trial(sw, led, trial)
      ran += 1
      continue
    if led.trials((TrialState.RUNNING, TrialState.WAITING)):
      # Others are still training: wait, so that a trial whose worker dies is still retried.
      time.sleep(min(5.0, sw.settings.heartbeat_interval))
      continue
    return ran


def _enable_compilation_cache() -> None:
  """JAX's persistent compilation cache (in the data cache folder) if the trainer uses JAX."""
  if "jax" not in sys.modules:
    return
  import jax
  if not jax.config.jax_compilation_cache_dir:
    from embbert_jax import train
    train.enable_compilation_cache()


def summarize(led: ledger_lib.Ledger, out: Path, settings: dict[str, Any], wandb_mode: str | None = None,
              log: Callable = say) -> dict[str, Any]:
  """Writes the tables and the plot from the ledger; logs the wandb summary once per finished sweep."""
  rows = [pareto.trial_row(t, settings.get("policy", "fp32")) for t in led.trials()]
  front = pareto.frontier_rows(rows)
  files = pareto.write_files(rows, front, settings, out)
  table = pareto.format_table(rows, front, settings)
  finished = bool(rows) and not any(r["status"] in ("running", "waiting") for r in rows)
  if wandb_mode and wandb_mode != "disabled" and finished:
    with led.lock():
      first = led.study_attrs().get("wandb_summary_for") != len(rows)
      if first:
        led.set_study_attr("wandb_summary_for", len(rows))
    if first:
      try:
        folder = pareto.log_wandb_summary(rows, front, files, settings, wandb_mode, out)
        log(f"wandb summary run ({wandb_mode}) in {folder}")
      except Exception as e:  # the ledger and files are the record; wandb is a view of them
        log(f"wandb summary failed: {_one_line(e)}")
  return {"rows": rows, "front": front, "files": files, "table": table, "finished": finished}


def wandb_mode(enabled: bool) -> str:
  """disabled, or as the trainer decides: $WANDB_MODE, else online with an API key, else offline."""
  if not enabled:
    return "disabled"
  return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def run_sweep(settings: ml_collections.ConfigDict, trainer: Any = None, log: Callable = say,
              summary: bool = True) -> dict[str, Any]:
  """Runs one worker of the sweep to the end; returns summarize()'s dict (plus "ran": trials run here).

  `trainer`: a module-like object with get_config() and train_and_evaluate(cfg, workdir, report); None
  imports settings.trainer (embbert_jax.train). Several processes may call this on one study at once.
  """
  sw = prepare(settings, trainer, log)
  _enable_compilation_cache()
  led = open_ledger(sw)
  s = sw.settings
  sw.out.mkdir(parents=True, exist_ok=True)
  (sw.out / "sweep.json").write_text(json.dumps(
      {**s.to_dict(), "storage": ledger_lib.redact(sw.storage_url), "budget_bytes": sw.budget,
       "min_budget_bytes": sw.min_budget, "fitting_configs": len(sw.ordered)}, indent=2, default=str))
  within = (f"{memory.format_bytes(sw.min_budget)}..{memory.format_bytes(sw.budget)}" if sw.min_budget
            else memory.format_bytes(sw.budget))
  log(f"study {s.study} ({ledger_lib.redact(sw.storage_url)}): {len(sw.ordered)} configs of space "
      f"{sw.space.name!r} fit {within} under {s.policy}; strategy {s.strategy}, at most {s.max_trials} "
      f"trials of {s.steps} steps (worker {led.worker})")
  ran = work(sw, led)
  out = {"ran": ran}
  if summary:
    out.update(summarize(led, sw.out, led.study_attrs().get("settings", {}), wandb_mode(s.wandb), log))
  return out
