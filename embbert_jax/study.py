"""A study: an ml_collections config of arms x tasks x seeds, loaded, checked and planned before anything
trains (`python -m embbert_jax.experiment NAME`; the studies that ship are in embbert_jax/studies/).

A study is a Python file whose `get_config()` returns an ml_collections ConfigDict:

  name            study name (wandb group, default output folder runs/experiments/<name>[-quick])
  description     one line for the table's heading
  tasks           task names or files (data.load_task), e.g. ("rt_polarity", "sms_spam")
  seeds           fine-tuning seeds per arm and task (mean and std over them)
  seed            the first seed
  pretrain_steps  MLM + NSP steps for the arms with `pretrain=True` (0 = none anywhere)
  train           training-config fields for every arm (dotted or nested: learning_rate, pretrain.seq_len)
  arms            list (or name -> dict) of arms: name, preset (configs.PRESETS), pretrain (bool),
                  init (the encoder as `train --init` takes it: scratch, supernet, auto or a pre-training
                  DIR; "" = scratch, or the in-run pre-training with pretrain=True), overrides
                  (training-config fields, model.* included), paper (the spec's number for the arm:
                  dict(value=87.19, metric="TinyNLP acc"), optional)
  figure          "bars" (accuracy and MCC per arm and task) or "scaling" (accuracy vs total memory, fp32
                  and int8)
  frontier        scaling only: a sweep's frontier.csv / trials.csv / .jsonl (pareto.write_files); its Pareto
                  configs join the arms. "" = none.
  quick           overrides applied by --quick (same keys; quick.train is merged into train)
  cpu             overrides applied by --cpu: the comparison at a budget a 2-core CPU finishes in hours
                  (same keys as quick; see CPU_TRAIN, CPU_TASKS and cpu_arm)
  reuse           other studies' output folders (--reuse): an arm whose task and training config (wandb
                  aside) match a finished run there is copied, not trained again

`plan(study)` builds every (arm, task) training config once (`arm_config`), so bad input is one line before
anything trains; experiment.py runs them, report.py writes the tables and the figure.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

import ml_collections

from embbert_jax import configs, pareto, recipes


class StudyError(ValueError):
  """A study that cannot run as given (missing file, unknown preset or field, bad --set)."""


def default_study() -> ml_collections.ConfigDict:
  """The fields a study file may set, with their defaults."""
  c = ml_collections.ConfigDict()
  c.name = ""
  c.description = ""
  c.tasks = ("rt_polarity",)
  c.seeds = 5
  c.seed = 0
  c.pretrain_steps = 0
  c.train = ml_collections.ConfigDict()
  c.arms = []
  c.figure = "bars"
  c.frontier = ""
  c.wandb = "auto"  # train.wandb_mode: auto / online / offline / disabled
  c.reuse = ()  # other studies' output folders: an arm with the same task and training config is copied
  c.quick = ml_collections.ConfigDict()
  c.cpu = ml_collections.ConfigDict()
  c.mode = ""  # the settings in use: "" (the study's full ones), or one of MODES (--quick, --cpu)
  c.train_sets = ()  # --set train.KEY=VALUE, applied to every arm's training config
  return c


# The paper's pre-training length (spec section 4: the published checkpoint, batch 32).
PAPER_PRETRAIN_STEPS = 867_000


def paper_study(name: str, description: str) -> ml_collections.ConfigDict:
  """The common start of the shipped studies (embbert_jax/studies/): both offline tasks, 5 seeds, the paper's
  recipe and pre-training length; a study adds its arms (and figure, quick settings)."""
  c = default_study()
  c.name, c.description = name, description
  c.tasks = ("rt_polarity", "sms_spam")
  c.pretrain_steps = PAPER_PRETRAIN_STEPS
  return c


# --quick training settings shared by the shipped studies, sized for a shared 2-core CPU: 200 steps
# of batch 16 at length 32 (most rt_polarity / sms_spam texts fit; longer ones are cut), evaluated once at
# the end. So few steps from scratch need a far larger learning rate than the recipe's fine-tuning 5e-5
# (the sweep measured 3e-3 as the best of 1e-3 / 3e-3 / 1e-2 at 300 steps); pre-training is short, so it
# gets 1e-3 instead of 2e-4.
QUICK_TRAIN = dict(steps=200, eval_every=200, log_every=25, seq_len=32, batch_size=16, learning_rate=3e-3,
                   pretrain=dict(learning_rate=1e-3, seq_len=64, eval_pairs=256, eval_every=0))


# --cpu: the paper's comparisons at a budget this 2-core CPU finishes in hours, the way the README's headline
# runs are made: 3 seeds, the two offline tasks plus tweets, each arm trained to the end of the
# from-scratch recipe (warmup then cosine decay, best validation checkpoint) over 10 epochs, the length
# the README's claims were measured at (the recipe itself now runs 4), from the corpus's token vectors
# (the pre-training that pays on this CPU; cpu_arm), with length bucketing for every arm.
CPU_TRAIN = dict(recipes.RECIPES["scratch"], recipe="scratch", epochs=10)
CPU_TASKS = ("rt_polarity", "sms_spam", "tweets")
CPU_INIT = "embeddings"

MODES = ("quick", "cpu")


def cpu_arm(arm: dict) -> dict:
  """An arm as --cpu trains it: no in-run pre-training (hours per arm here), the token-vector init
  instead, and no fixed-width override (bucket_window=0: a long-tailed task's every batch at 256 tokens
  costs 3-4x the steps; the published module switches stay)."""
  overrides = {k: v for k, v in dict(arm.get("overrides") or {}).items() if k != "bucket_window"}
  return dict(arm, pretrain=False, init=CPU_INIT, overrides=overrides)


PACKAGE_STUDIES = Path(__file__).resolve().parent / "studies"


def resolve_study(study: str) -> Path:
  """A study file from a path, or a name: the package's embbert_jax/studies/ first, then ./experiments."""
  return configs.find_config_file(study, PACKAGE_STUDIES, "experiments", StudyError, "study", _is_study)


def _is_study(path: Path) -> bool:
  return "def get_config" in path.read_text()


def load_study(study: str, mode: str = "", overrides: Iterable[str] = (),
               fields: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """Runs the file's get_config() over the defaults, then the `mode`'s settings (--quick, --cpu), then the
  typed `fields` (command-line flags), then `overrides` ("key=value" strings of --set), all with
  configs.set_field; "train.KEY=VALUE" is kept for every arm's training config (arm_config applies it)."""
  path = resolve_study(study)
  got = configs.run_config_file(path, StudyError, 'study')
  if not isinstance(got, ml_collections.ConfigDict) or not got.get("arms"):
    raise StudyError(f"study {path}: get_config() must return a ConfigDict with a non-empty 'arms' field")
  cfg = default_study()
  _merge(cfg, got.to_dict(), str(path))
  if not cfg.name:
    cfg.name = path.stem
  if mode:
    if mode not in MODES:
      raise StudyError(f"unknown study mode {mode!r}; known: {', '.join(MODES)}")
    if not cfg[mode].to_dict():
      raise StudyError(f"study {path} has no --{mode} settings")
    _merge(cfg, cfg[mode].to_dict(), f"{path} ({mode})")
  cfg.mode = mode
  for key, value in (fields or {}).items():
    configs.set_field(cfg, key, value)
  train_sets = []
  for item in overrides:
    key = item.partition("=")[0].strip().lstrip("-")
    if key.startswith("train."):
      train_sets.append(f"{key[len('train.'):]}={item.partition('=')[2]}")
    else:
      configs.apply_overrides(cfg, [item])
  cfg.train_sets = tuple(train_sets)  # applied to every arm's training config (validated there)
  return cfg


def _merge(cfg: ml_collections.ConfigDict, values: dict, where: str) -> None:
  """Sets the study fields in `values`; `train` is merged (nested or dotted fields), anything else
  replaced."""
  for key, value in values.items():
    if key not in cfg:
      raise StudyError(f"{where}: unknown study field {key!r}; fields: {', '.join(sorted(cfg.keys()))}")
    if key == "train":
      cfg.train.update(configs.nest_dict(dict(value)))
    elif key in MODES:
      cfg[key] = ml_collections.ConfigDict(value)
    else:
      with cfg.unlocked():
        cfg[key] = value


def arm_list(study) -> list[dict[str, Any]]:
  """The arms as plain dicts with every key filled in, in the study's order."""
  arms = study.arms
  items = list(arms.items()) if hasattr(arms, "items") else [(None, a) for a in arms]
  out, seen = [], set()
  for name, a in items:
    a = dict(a.to_dict() if hasattr(a, "to_dict") else a)
    a["name"] = a.get("name") or name
    if not a["name"]:
      raise StudyError(f"an arm of study {study.name!r} has no name: {a}")
    unknown = set(a) - {"name", "preset", "pretrain", "init", "overrides", "paper", "model"}
    if unknown:
      raise StudyError(f"arm {a['name']!r}: unknown keys {sorted(unknown)}")
    if a["name"] in seen:
      raise StudyError(f"two arms are named {a['name']!r}")
    seen.add(a["name"])
    a.setdefault("preset", "embbert")
    a.setdefault("pretrain", False)
    a["init"] = str(a.get("init") or "")
    a["overrides"] = configs.flatten_dict(dict(a.get("overrides") or {}))
    a["paper"] = dict(a.get("paper") or {})
    out.append(a)
  return out


def arm_config(study, arm: dict, task: str):
  """The training config of one arm on one task (train.get_config + study train + arm overrides)."""
  from embbert_jax import train
  cfg = train.get_config(arm["preset"])  # ConfigError for an unknown preset
  if arm.get("model"):  # a complete model config (the sweep's frontier rows)
    cfg.model = configs.model_config(**{k: v for k, v in arm["model"].items() if k in cfg.model})
  fields = {**configs.flatten_dict(study.train.to_dict()), **arm["overrides"]}
  for key, value in fields.items():
    try:
      configs.set_field(cfg, key, value)
    except configs.UnknownField:
      raise StudyError(f"arm {arm['name']!r}: unknown training field {key!r}") from None
    except configs.ConfigError as e:
      raise StudyError(f"arm {arm['name']!r}: {e}") from None
  configs.apply_overrides(cfg, study.get("train_sets", ()))
  cfg.task = str(task)
  cfg.seed = study.seed
  cfg.pretrain.steps = study.pretrain_steps if arm["pretrain"] else 0
  cfg.wandb.mode = study.wandb
  cfg.wandb.group = study.name
  cfg.wandb.name = f"{arm['name']}-{task_slug(task)}"
  try:
    configs.validate_training(cfg)
    if arm.get("init"):  # inits.resolve: the rule of `train --init`
      from embbert_jax import inits
      for key, value in configs.init_fields(inits.resolve(cfg, arm["init"]).record()).items():
        configs.set_field(cfg, key, value)
  except (configs.ConfigError, ValueError) as e:  # (inits.InitError is a ValueError)
    raise StudyError(f"arm {arm['name']!r}: {str(e).splitlines()[0]}") from None
  return cfg


def mode_label(study) -> str:
  """" (--quick)" / " (--cpu)" after a study's name in its tables and figures; "" for its full settings."""
  return f" (--{study.mode})" if study.get("mode") else ""


def task_slug(task: str) -> str:
  return Path(str(task)).stem.replace("/", "_")


def frontier_arms(path: str, preset_arm: dict | None = None) -> list[dict[str, Any]]:
  """Arms for the Pareto configs of a sweep file (frontier/trials .csv or .jsonl of pareto.write_files).

  The model config comes from the rows' `model` field (JSONL); a CSV does not carry it, so it is read
  from the trials.jsonl beside the CSV (joined on the config hash).
  """
  p = Path(path)
  if not p.is_file():
    raise StudyError(f"frontier file not found: {path}")
  rows = _read_rows(p)
  if p.suffix == ".csv":
    sibling = p.with_name("trials.jsonl")
    if not sibling.is_file():
      raise StudyError(f"{path} holds no model configs; the trials.jsonl beside it is missing")
    models = {r["hash"]: r["model"] for r in _read_rows(sibling)}
    for r in rows:
      r["model"] = models.get(r["hash"])
  front = pareto.frontier_rows(rows)
  base = dict(preset_arm or {})
  arms = []
  for r in front:
    if not r.get("model"):
      raise StudyError(f"{path}: trial {r['trial']} has no model config")
    model = {**r["model"], "conv_impl": "auto"}  # the lowering is no part of the network
    arms.append({**base, "name": f"frontier-t{r['trial']}", "preset": "embbert", "model": model,
                 "overrides": dict(base.get("overrides") or {}), "paper": {},
                 "pretrain": bool(base.get("pretrain", False)), "sweep_config": r.get("config", "")})
  return arms


def _read_rows(p: Path) -> list[dict[str, Any]]:
  if p.suffix == ".jsonl":
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
  elif p.suffix == ".csv":
    rows = list(csv.DictReader(io.StringIO(p.read_text())))
  else:
    raise StudyError(f"frontier file must be .csv or .jsonl: {p}")
  for r in rows:  # CSV cells are strings
    for k in ("trial", "memory_bytes"):
      r[k] = None if r.get(k) in (None, "") else int(float(r[k]))
    r["value"] = None if r.get("value") in (None, "") else float(r["value"])
  return rows


def plan(study) -> list[tuple[dict, str]]:
  """Every (arm, task) of the study, each config built once to catch bad input before anything trains."""
  arms = arm_list(study)
  if study.frontier:
    if study.figure != "scaling":
      raise StudyError("frontier configs belong to a scaling study (figure='scaling')")
    template = next((a for a in arms if a["preset"] == "embbert"), arms[0])
    arms += frontier_arms(study.frontier, {"pretrain": template["pretrain"], "init": template["init"]})
  if not study.tasks:
    raise StudyError("the study has no tasks")
  if study.seeds < 1:
    raise StudyError("seeds must be >= 1")
  pairs = [(a, t) for t in study.tasks for a in arms]
  cfgs = [arm_config(study, a, t) for a, t in pairs]
  from embbert_jax import data
  for t in dict.fromkeys(study.tasks):  # a missing file or a bad row fails now, not after pre-training
    data.load_task(str(t), cache_dir=(cfgs[0].cache_dir if cfgs else "") or None)
  return pairs
