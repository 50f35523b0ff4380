"""The sweep's settings and setup: validate every input (budget, space, task, trainer config) before the
ledger is touched (`prepare`), build each trial's training config (`trainer_config`), open the ledger and
write the frontier files from it (`summarize`).

`SETTINGS` declares every setting of a sweep once: its default, its help and its choices; `get_config()`
and the command line of sweep.py are both built from it. The worker loop that trains trials is worker.py,
the early-stopping rule early_stop.py, the search space space.py, the proposals propose.py.

The trainer is a plug-in (`Trainer`, `GroupTrainer`): train.py by default, any module or .py file with the
same functions otherwise (tests use a fake one without JAX).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Protocol

import ml_collections

from embbert_jax import asha as asha_lib, configs, data, ledger as ledger_lib, memory, pareto, propose
from embbert_jax import space as space_lib
from embbert_jax.files import unwritable
from embbert_jax.signals import Preempted  # noqa: F401  (raised at a requested stop's safe point)


STRATEGIES = ("grid", "tpe", "nsga2")
SCRATCH = {"kind": "scratch", "path": "", "steps": 0}  # inits.Init("scratch").record(), without JAX
STORAGE_ENV = "EMBBERT_JAX_STORAGE"  # the ledger URL when --storage is not given (keeps a password off argv)


@dataclasses.dataclass(frozen=True)
class Setting:
  """One setting of a sweep: a field of get_config() and a flag of `python -m embbert_jax.sweep`."""
  name: str
  default: Any
  help: str
  choices: tuple[str, ...] = ()
  hidden: bool = False  # a flag for tests and the launcher, not shown in --help

  @property
  def flag(self) -> str:
    return "--" + self.name.replace("_", "-")


SETTINGS = (
    Setting("budget", "", "memory budget (weights + activations): " + memory.BUDGET_FORMS),
    Setting("min_budget", "", "skip configs smaller than this"),
    Setting("policy", "fp32", "dtype policy memory is priced under", tuple(memory.POLICIES)),
    Setting("task", "rt_polarity", "registry name (rt_polarity, sms_spam) or a local .jsonl/.csv file"),
    Setting("space", "default", "search space: a name (default, tiny, tiny_grouped, families: "
            "embbert_jax/sweeps/) or a file"),
    Setting("strategy", "grid", "grid: fitting configs in memory-spread order; tpe/nsga2: two-objective "
            "sampler", STRATEGIES),
    Setting("max_trials", 0, "trials in the study, all workers together (with a train_grid: member trials); "
            "0 = no cap with a --time-budget, eta^rungs configs with asha and no clock, 12 with fixed"),
    # Fixed: 400 steps, about 1.5 epochs of rt_polarity at batch 32. Asha: the recipe's whole run.
    Setting("steps", 0, "training steps per trial (asha: of the top rung, R_max); 0 = 400 with --scheduler "
            "fixed, the recipe's whole run (its epochs of the task) with asha"),
    Setting("time_budget", "45m", "wall-clock budget of the whole sweep, e.g. 45m, 2h, 90s: the asha "
            "scheduler plans rungs, trials and final seeds to end within it; none = no clock (asha then "
            "starts --max-trials configs)"),
    Setting("scheduler", "asha", "asha: successive halving by Pareto rank within memory bands, the top rung "
            "trained to convergence, final seeds; fixed: every trial trains --steps (no --time-budget)",
            ("fixed", "asha")),
    Setting("rungs", 0, "asha: rungs, each eta x the steps of the one below, the top one R_max; 0 = auto: "
            "the most (up to 3) whose rung 0 trains >= 1 of the recipe's epochs"),
    Setting("eta", 3, "asha: promotion ratio (the best 1/eta of a band's rung moves up)"),
    Setting("final_seeds", 3, "asha: seeds of each band's best top-rung config (the frontier's mean +- sd)"),
    Setting("patience", 4, "asha: stop a trial once its validation metric has not improved for this many "
            "evaluations (one per epoch, or two per rung 0 if that is sooner); 0 = never"),
    Setting("init", "auto", "encoder of every trial: auto (a shipped or cached supernet that holds every "
            "fitting config, else a shipped encoder when every fitting config is its model config, else "
            "embeddings), supernet (its slices), pretrained, embeddings (token vectors of the corpus, the "
            "rest random), scratch, or DIR (a supernet folder, or a "
            "standalone pre-training whose encoder fits every fitting config)"),
    Setting("recipe", "auto", "training recipe of every trial (trainer's recipes): auto = scratch from "
            "random init, the fine-tuning recipe with a pre-trained encoder (--init, --pretrain-steps)"),
    Setting("pretrain_steps", 0, "MLM+NSP steps before each fine-tuning"),
    Setting("seed", 0, "training seed of every trial (a train_grid may vary it)"),
    Setting("storage", "", "ledger: SQLAlchemy URL or SQLite file (default <out>/ledger.db)"),
    Setting("study", "", "study name (default <space>-<task>-<budget>-<policy>)"),
    Setting("out", "", "results folder (default runs/sweeps/<study>)"),
    Setting("wandb", True, "one wandb run per trial + a summary run (offline without WANDB_API_KEY)"),
    Setting("wandb_project", "embbert_jax", "wandb project of the trial and summary runs"),
    Setting("heartbeat_interval", 20, "seconds between a running trial's heartbeats"),
    Setting("grace_period", 120, "seconds without heartbeat before a RUNNING trial is requeued"),
    Setting("max_attempts", 3, "worker deaths during one trial before the trial counts as failed"),
    Setting("group", True, "train the member trials of one config (a space's train_grid: seeds, learning "
            "rates) together in one program when the trainer can; --no-group trains them one at a time"),
    Setting("compile_ahead", "auto", "asha: while a trial trains, compile the programs of the config the "
            "sweep will start next on a second thread, into JAX's persistent compilation cache (the trial "
            "then loads them); auto = on where an accelerator trains (on a 2-core CPU it took the cores "
            "the trial trained on: no more configs per minute)", ("auto", "on", "off")),
    # Tests: a fake trainer module or file.
    Setting("trainer", "embbert_jax.train", "module (or .py file) with the Trainer functions", hidden=True),
    Setting("text_field", "", "a local task file's text field (default: text)"),
    Setting("label_field", "", "a local task file's label field (default: label)"),
)


def get_config() -> ml_collections.ConfigDict:
  """Settings of one sweep, with the defaults of SETTINGS (the flags of sweep.py say what each means)."""
  return ml_collections.ConfigDict({s.name: s.default for s in SETTINGS})


class SweepError(Exception):
  """Bad input or an impossible sweep; the message is one line."""


class PrunedTrial(Exception):
  """Raised by the report callback when the trainer defines no Pruned exception of its own."""


class Trainer(Protocol):
  """What the sweep needs of a trainer module: its training config, and one trial trained in a workdir.

  `report(step, validation_metrics)` is called after every validation and may raise the trainer's
  `Pruned` (or engine.PrunedTrial) to stop the trial. A module may set NEEDS_DATA = False (the task is
  then not loaded up front) and define `Pruned`, and `precompile(cfg) -> {"programs", "seconds"}`, which
  the asha worker calls on a thread for the config it will start next (compile_ahead.CompileAhead)."""

  def get_config(self) -> ml_collections.ConfigDict: ...

  def train_and_evaluate(self, cfg: ml_collections.ConfigDict, workdir: Path,
                         report: Callable | None = None) -> dict[str, Any]: ...


class GroupTrainer(Trainer, Protocol):
  """A trainer that also trains the member trials of one config as one program (train.py does): configs
  with equal `group_key` may share a `train_group` call of at most `max_group_size` members, which returns
  one outcome per member ({"status": "complete" | "pruned" | "failed", ...})."""

  def train_group(self, cfgs: list, workdirs: list, report: Callable | None = None) -> list[dict]: ...

  def max_group_size(self, cfg: ml_collections.ConfigDict) -> int: ...

  def group_key(self, cfg: ml_collections.ConfigDict) -> str: ...


@dataclasses.dataclass
class Sweep:
  """A resolved, validated sweep (nothing written yet)."""
  settings: ml_collections.ConfigDict
  space: ml_collections.ConfigDict
  budget: int
  min_budget: int
  ordered: list[space_lib.Candidate]  # fitting candidates, memory-spread order
  trainer: Trainer
  num_labels: int
  metric: str
  out: Path
  storage_url: str
  identity: dict[str, Any]
  log: Callable[[str], None]
  members: list[dict[str, Any]]  # the training knobs of each member trial of a config (space.members)
  eps: float = 0.0  # validation-metric differences below this are ties (asha ranking): its noise level
  init: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(SCRATCH))  # inits.Init.record()
  asha: dict[str, Any] | None = None  # the multi-fidelity schedule (scheduler.py), once set up

  @functools.cached_property
  def fitting(self) -> dict[str, space_lib.Candidate]:
    return {c.hash: c for c in self.ordered}


def member_hash(shape: str, knobs: dict[str, Any]) -> str:
  """A member trial's hash: its config's hash, with the training knobs of a train grid mixed in."""
  return shape if not knobs else configs.config_hash({"shape": shape, "train": knobs})


def member_attrs(c: space_lib.Candidate, knobs: dict[str, Any], init: dict[str, Any]) -> dict[str, Any]:
  """The user attrs a config's member trial enters the ledger with (`init`: the sweep's Sweep.init)."""
  return {"init": dict(init), "family": c.family, "config": dict(c.point), "describe": c.describe(),
          "hash": member_hash(c.hash, knobs), "shape": c.hash, "train": dict(knobs), "model": c.model.to_dict(),
          "params": c.params, "bytes": c.bytes}


def say(msg: str) -> None:
  print(f"[sweep] {msg}", file=sys.stderr, flush=True)


def load_trainer(spec: str) -> Trainer:
  """The trainer module: a dotted module name or a .py file."""
  if spec.endswith(".py"):
    modspec = importlib.util.spec_from_file_location(f"embbert_sweep_trainer_{Path(spec).stem}", spec)
    module = importlib.util.module_from_spec(modspec)
    modspec.loader.exec_module(module)
    return module
  return importlib.import_module(spec)


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


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
  if s.max_trials < 0 or s.steps < 0 or s.pretrain_steps < 0:
    raise SweepError("--max-trials, --steps and --pretrain-steps must be >= 0")
  if s.scheduler not in ("fixed", "asha"):
    raise SweepError(f"unknown scheduler {s.scheduler!r}; known: fixed, asha")
  asha_on = s.scheduler == "asha"
  with s.unlocked():
    if not asha_on or str(s.time_budget).strip().lower() in ("", "none", "off"):
      s.time_budget = ""
  if s.time_budget:
    try:
      asha_lib.parse_duration(s.time_budget)
    except ValueError as e:
      raise SweepError(str(e)) from None
  if asha_on and (s.rungs < 0 or s.eta < 2 or s.final_seeds < 1 or s.patience < 0):
    raise SweepError("--rungs must be >= 0 (0 = auto), --final-seeds >= 1, --eta >= 2, --patience >= 0")
  with s.unlocked():
    if not asha_on and not s.steps:
      s.steps = 400
    if not asha_on and not s.max_trials:
      s.max_trials = 12
  if s.seed < 0 or s.max_attempts < 1 or s.heartbeat_interval < 1:
    raise SweepError("--seed must be >= 0, --max-attempts and --heartbeat-interval >= 1")
  if s.grace_period < 2 * s.heartbeat_interval:
    # A live worker beats every heartbeat_interval seconds: a shorter grace would requeue its trial and
    # train it twice.
    raise SweepError(f"--grace-period ({s.grace_period} s) must be at least twice --heartbeat-interval "
                     f"({s.heartbeat_interval} s), or live trials are taken for dead ones")
  if s.get("text_field") or s.get("label_field"):
    with s.unlocked():
      s.task = data.task_with_fields(s.task, s.text_field, s.label_field)
  space_cfg = space_lib.load(s.space)
  trainer = trainer if trainer is not None else load_trainer(s.trainer)
  num_labels, metric, n_val = space_cfg.num_labels, "mcc", 0
  if getattr(trainer, "NEEDS_DATA", True):
    task = data.load_task(s.task)  # DataError here, before the ledger exists
    num_labels, metric = task.num_labels, task.metric
    n_val = len(task.splits["validation"])
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
  storage = s.storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{out / 'ledger.db'}"
  hide_passwords_in_argv()
  if "://" not in storage:
    storage = f"sqlite:///{storage}"  # a bare file path
  _check_writable(out, "the results folder (--out)", folder=True)
  if ledger_lib.sqlite_path(storage) is not None:
    _check_writable(ledger_lib.sqlite_path(storage), "the SQLite ledger (--storage)", folder=False)
  with s.unlocked():
    s.study, s.storage = study, storage
  # What must not change when a study is resumed: it would make its trials incomparable.
  # An empty train grid leaves the digest of a space as it was before train grids existed.
  space_dict = {k: v for k, v in space_cfg.to_dict().items() if k != "train_grid" or v}
  identity = dict(space=space_cfg.name, space_digest=configs.config_hash(space_dict), task=str(s.task),
                  policy=s.policy, steps=s.steps, pretrain_steps=s.pretrain_steps, seed=s.seed)
  if s.recipe != "auto":
    identity["recipe"] = s.recipe
  if asha_on:
    identity.update(scheduler="asha", rungs=s.rungs, eta=s.eta, final_seeds=s.final_seeds, patience=s.patience)
    if space_lib.members(space_cfg) != [{}]:
      raise SweepError(f"space {space_cfg.name!r} has a train_grid; the asha scheduler trains one setting "
                       "per config (its final seeds are the repeats): use --scheduler fixed")
  # Two trials closer than the standard error of a validation accuracy are a tie (MCC spans twice the range).
  eps = asha_lib.accuracy_eps(0.5, n_val) * (2.0 if metric == "mcc" else 1.0) if n_val else 0.0
  sw = Sweep(s, space_cfg, budget, min_budget, space_lib.spread_order(fitting, s.policy), trainer,
             num_labels, metric, out, storage, identity, log, space_lib.members(space_cfg), eps)
  sw.init = resolve_init(sw)
  # (a scratch study keeps the identity it had before --init existed)
  if sw.init["path"] or sw.init["kind"] == "embeddings":
    identity["init"] = sw.init
  for knobs in sw.members:  # a bad `train` override or train_grid field fails here
    cfg = trainer_config(sw, fitting[0].model, number=0, hash_="0" * 12, knobs=knobs)
    try:
      configs.validate_training(cfg)
    except configs.ConfigError as e:
      raise SweepError(f"space {space_cfg.name!r}: {e}") from None
    if asha_on and "stop_at" not in cfg:
      raise SweepError(f"the trainer {s.trainer!r} cannot pause a run at a rung (its config has no stop_at "
                       "field): use --scheduler fixed")
  return sw


def resolve_init(sw: Sweep) -> dict[str, Any]:
  """The encoder every trial starts from (inits.resolve over all fitting configs: one rule with `train
  --init`), as inits.Init.record(); SweepError in one line for a bad DIR, a config outside the supernet, or
  a pre-trained init with a trainer that cannot load one (its config has no init_from field)."""
  spec = str(sw.settings.get("init") or "auto")
  cfg = trainer_config(sw, sw.ordered[0].model, number=0, hash_="0" * 12)
  if "init_from" not in cfg:
    if spec not in ("auto", "scratch"):
      raise SweepError(f"--init {spec}: the trainer {sw.settings.trainer!r} cannot start from a pre-trained "
                       "encoder (its config has no init_from field); use --init scratch")
    steps = int(sw.settings.pretrain_steps)
    return {**SCRATCH, "kind": "pretrain_steps", "steps": steps} if steps else dict(SCRATCH)
  from embbert_jax import inits
  try:
    init = inits.resolve(cfg, spec, [(f"config {c.describe()}", c.model) for c in sw.ordered])
  except (inits.InitError, configs.ConfigError, data.DataError, ValueError) as e:
    raise SweepError(str(e).strip().splitlines()[0]) from None
  if init.kind == "embeddings" and "token_vectors" not in cfg:
    if spec != "auto":
      raise SweepError(f"--init embeddings: the trainer {sw.settings.trainer!r} cannot take token vectors (its "
                       "config has no token_vectors field); use --init scratch")
    init = inits.Init("scratch")
  sw.log(f"{init.describe()}" + ("" if init.kind not in ("scratch", "embeddings") or spec != "auto" else
                                 " (no shipped or cached supernet holds every fitting config)"))
  return init.record()


def hide_passwords_in_argv() -> None:
  """Masks the password of a --storage URL in this process's sys.argv (ledger.redact), in place: wandb
  records sys.argv in every run's metadata (and uploads it with an API key), crash reports print it. The
  URL itself lives on in the settings. A URL in $EMBBERT_JAX_STORAGE never reaches a command line."""
  sys.argv[:] = [ledger_lib.redact(a) for a in sys.argv]


def _check_writable(path: Path, what: str, folder: bool) -> None:
  """SweepError in one line unless `path` can be created or written (files.unwritable; SQLite also writes
  its journal beside the ledger)."""
  why = unwritable(path, folder)
  if why:
    raise SweepError(f"{what}: {why}")


def trainer_config(sw: Sweep, model, number: int, hash_: str, knobs: dict[str, Any] | None = None):
  """The trainer's config of one trial: the sweep's settings, then space.train, then the trial's knobs,
  each set with configs.set_field. `model`: the model config (a ModelConfig, a dict or a ConfigDict)."""
  s = sw.settings
  cfg = sw.trainer.get_config()
  cfg.model = configs.model_config(**configs.ModelConfig.from_dict(model).to_dict())
  eval_every = max(1, s.steps // max(1, sw.space.evals)) if s.steps else 0  # 0: the trainer's default
  for key, value in configs.init_fields(sw.init).items():  # an encoder: recipe auto then picks the fine-tuning recipe
    configs.set_field(cfg, key, value)
  recipe = getattr(sw.trainer, "apply_recipe", None)
  if recipe is not None:
    try:
      configs.set_field(cfg, "pretrain.steps", s.pretrain_steps)  # auto picks the recipe by it
      recipe(cfg, s.recipe)
    except ValueError as e:
      raise SweepError(str(e)) from None
  fields = {"task": str(s.task), "seed": s.seed, "steps": s.steps, "eval_every": eval_every,
            "pretrain.steps": s.pretrain_steps, "wandb.group": s.study,
            "wandb.name": f"{s.study}-t{number:04d}-{hash_[:6]}",
            "wandb.mode": ("auto" if s.wandb else "disabled"),
            **configs.flatten_dict(sw.space.train.to_dict()), **(knobs or {})}
  if "log_every" in cfg and eval_every:
    fields["log_every"] = min(cfg.log_every, eval_every)
  if "wandb" in cfg and "project" in cfg.wandb:
    fields["wandb.project"] = s.wandb_project
  for key, value in fields.items():
    try:
      configs.set_field(cfg, key, value)
    except configs.UnknownField:
      raise SweepError(f"the trainer's config has no field {key!r} "
                       f"(space {sw.space.name!r}, train.* or train_grid.*)") from None
    except configs.ConfigError as e:
      raise SweepError(f"bad value for training field {key!r}: {e}") from None
  return cfg


def open_ledger(sw: Sweep) -> ledger_lib.Ledger:
  """The study's ledger, its identity checked and its settings recorded; LedgerError in one line for a
  ledger that cannot be written (read-only file or database user, a full disk), not the database's trace."""
  import sqlite3
  import optuna
  import sqlalchemy as sa
  try:
    return _open_ledger(sw)
  except ledger_lib.LedgerError as e:  # the driver's words may quote pieces of a password with '@' or ':'
    raise ledger_lib.LedgerError(ledger_lib.redact(str(e), sw.storage_url)) from None
  except (sa.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, sqlite3.Error) as e:
    text = str(getattr(e, "orig", None) or e.__cause__ or e).strip()
    first = ledger_lib.redact(text.splitlines()[0], sw.storage_url) if text else type(e).__name__
    raise ledger_lib.LedgerError(f"cannot use the ledger {ledger_lib.redact(sw.storage_url)}: {first}") from None


def _open_ledger(sw: Sweep) -> ledger_lib.Ledger:
  s = sw.settings
  storage = ledger_lib.open_storage(sw.storage_url, s.heartbeat_interval, s.grace_period)
  led = ledger_lib.Ledger(storage, s.study, propose.DIRECTIONS)
  with led.lock():
    attrs = led.study_attrs()
    if "identity" not in attrs:
      led.set_study_attr("identity", sw.identity)
    elif attrs["identity"] != sw.identity:
      old = attrs["identity"]  # (a key of one side only: e.g. init, absent from scratch studies)
      diff = ", ".join(f"{k}={old.get(k)!r} (now {sw.identity.get(k)!r})" for k in dict.fromkeys([*sw.identity, *old])
                       if old.get(k) != sw.identity.get(k))
      raise SweepError(f"study {s.study!r} was started with {diff}; resume it with the same settings "
                       "or pass a new --study name")
    led.set_study_attr("settings", {"study": s.study, "budget": sw.budget, "min_budget": sw.min_budget,
                                    "policy": s.policy, "metric": sw.metric, "task": str(s.task),
                                    "space": sw.space.name, "strategy": s.strategy,
                                    "max_trials": s.max_trials, "steps": s.steps, "scheduler": s.scheduler,
                                    "time_budget": s.time_budget})
    led.set_metric_names([f"validation {sw.metric}", f"{s.policy} memory bytes"])
  return led


def one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def summarize(led: ledger_lib.Ledger, out: Path, settings: dict[str, Any], wandb_mode: str | None = None,
              log: Callable = say) -> dict[str, Any]:
  """Writes the tables and the plot from the ledger; logs the wandb summary once per finished sweep."""
  rows = [pareto.trial_row(t, settings.get("policy", "fp32")) for t in led.trials()]
  attrs = led.study_attrs()
  state = attrs.get(ledger_lib.ASHA_STATE)
  if state:  # a multi-fidelity sweep: its start (the time line) and its plan (the table's head)
    settings = {**settings, "started": state.get("started"), "plan": state.get("plan"),
                "dropped": state.get("dropped", []), "rungs_why": state.get("rungs_why", [])}
  ahead = [v for k, v in attrs.items() if k.startswith(ledger_lib.COMPILE_AHEAD)]  # per worker
  if ahead:
    settings = {**settings, "compile_ahead": {k: sum(a.get(k, 0) for a in ahead)
                                              for k in ("programs", "configs", "seconds", "waited")}}
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
        log(f"wandb summary failed: {one_line(e)}")
  return {"rows": rows, "front": front, "files": files, "table": table, "finished": finished}


def wandb_mode(enabled: bool) -> str:
  """disabled, or as the trainer decides: $WANDB_MODE, else online with an API key, else offline."""
  if not enabled:
    return "disabled"
  return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
