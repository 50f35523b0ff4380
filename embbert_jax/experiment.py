"""`python -m embbert_jax.experiment experiments/<study>.py`: a study's arms x tasks x seeds, one table.

    python -m embbert_jax.experiment experiments/baselines_2mb.py --quick --tasks rt_polarity,sms_spam
    python -m embbert_jax.experiment ablation --seeds 3 --set train.learning_rate=1e-4
    python -m embbert_jax.experiment scaling --quick --frontier runs/sweeps/NAME/frontier.csv

A study is a Python file whose `get_config()` returns an ml_collections ConfigDict:

  name            study name (wandb group, default output folder runs/experiments/<name>[-quick])
  description     one line for the table's heading
  tasks           task names or files (data.load_task), e.g. ("rt_polarity", "sms_spam")
  seeds           fine-tuning seeds per arm and task (mean and std over them)
  seed            the first seed
  pretrain_steps  MLM + NSP steps for the arms with `pretrain=True` (0 = none anywhere)
  train           training-config fields for every arm (dotted or nested: learning_rate, pretrain.seq_len)
  arms            list (or name -> dict) of arms: name, preset (configs.PRESETS), pretrain (bool),
                  overrides (training-config fields, model.* included), paper (the spec's number for the
                  arm: dict(value=87.19, metric="TinyNLP acc"), optional)
  figure          "bars" (accuracy and MCC per arm and task) or "scaling" (accuracy vs total memory, fp32
                  and int8)
  frontier        scaling only: a sweep's frontier.csv / trials.csv / .jsonl (pareto.write_files); its Pareto
                  configs join the arms. "" = none.
  quick           overrides applied by --quick (same keys; quick.train is merged into train)
  reuse           other studies' output folders (--reuse): an arm whose task and training config (wandb
                  aside) match a finished run there is copied, not trained again

Each arm and task runs `train.run_seeds` in <out>/runs/<task>/<arm>. An arm with `pretrain` is pre-trained
once (in <out>/pretrain/<arm>-<hash>, shared by all its tasks and seeds, since the encoder does not depend
on the task) and every seed fine-tunes from it through `init_from`. A finished arm leaves `arm_result.json`
and is skipped on a rerun with the same settings (an interrupted one resumes from its checkpoints; other
settings make it a failed row, never a silent mix); a failing arm (a NaN loss, a config that cannot
train) is recorded as failed in the table, and the study goes on with the next.

Outputs: results.csv (one row per arm and task), results.md (mean +- std, parameters, fp32 and int8 total
memory (memory.estimate), the paper's number for the arm where the spec has one) and <name>.png. Every run
logs to wandb grouped by the study (offline without WANDB_API_KEY), plus one summary run with the table.
Exit status: 0, 1 when an arm failed, 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import ml_collections

from embbert_jax import configs, data, memory, pareto

STUDY_DIR = Path(__file__).resolve().parent.parent / "experiments"
METRICS = ("accuracy", "mcc", "macro_f1")
RESULT_FILE = "arm_result.json"


class StudyError(ValueError):
  """A study that cannot run as given (missing file, unknown preset or field, bad --set)."""


# ------------------------------------------------------------------------------------------ the study


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
  c.quick_mode = False  # set by --quick
  c.train_sets = ()  # --set train.KEY=VALUE, applied to every arm's training config
  return c


# The paper's pre-training length (spec section 4: the published checkpoint, batch 32).
PAPER_PRETRAIN_STEPS = 867_000


def paper_study(name: str, description: str) -> ml_collections.ConfigDict:
  """The common start of the studies in experiments/: both offline tasks, 5 seeds, the paper's recipe and
  pre-training length; a study adds its arms (and figure, quick settings)."""
  c = default_study()
  c.name, c.description = name, description
  c.tasks = ("rt_polarity", "sms_spam")
  c.pretrain_steps = PAPER_PRETRAIN_STEPS
  return c

# --quick training settings shared by the studies in experiments/, sized for a shared 2-core CPU: 200 steps
# of batch 16 at length 32 (most rt_polarity / sms_spam texts fit; longer ones are cut), evaluated once at
# the end. So few steps from scratch need a far larger learning rate than the recipe's fine-tuning 5e-5
# (the sweep measured 3e-3 as the best of 1e-3 / 3e-3 / 1e-2 at 300 steps); pre-training is short, so it
# gets 1e-3 instead of 2e-4.
QUICK_TRAIN = dict(steps=200, eval_every=200, log_every=25, seq_len=32, batch_size=16, learning_rate=3e-3,
                   pretrain=dict(learning_rate=1e-3, seq_len=64, eval_pairs=256, eval_every=0))


def resolve_study(study: str) -> Path:
  """A study file from a path, or a name in ./experiments or the repository's experiments/."""
  return configs.find_config_file(study, "experiments", STUDY_DIR, StudyError, "study", _is_study)


def _is_study(path: Path) -> bool:
  return "def get_config" in path.read_text()


def load_study(study: str, quick: bool = False, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Runs the file's get_config() over the defaults, then --quick, then `overrides` ("key=value")."""
  path = resolve_study(study)
  got = configs.run_config_file(path, StudyError, 'study')
  if not isinstance(got, ml_collections.ConfigDict) or not got.get("arms"):
    raise StudyError(f"study {path}: get_config() must return a ConfigDict with a non-empty 'arms' field")
  cfg = default_study()
  _merge(cfg, got.to_dict(), str(path))
  if not cfg.name:
    cfg.name = path.stem
  if quick:
    _merge(cfg, cfg.quick.to_dict(), f"{path} (quick)")
  cfg.quick_mode = quick
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
  """Sets the study fields in `values`; `train` is merged (dotted fields), anything else replaced."""
  for key, value in values.items():
    if key not in cfg:
      raise StudyError(f"{where}: unknown study field {key!r}; fields: {', '.join(sorted(cfg.keys()))}")
    if key == "train":
      _deep_update(cfg.train, dict(value))
    elif key == "quick":
      cfg.quick = ml_collections.ConfigDict(value)
    else:
      with cfg.unlocked():
        cfg[key] = value


def _deep_update(node: ml_collections.ConfigDict, values: dict) -> None:
  """Merges nested `values` into `node` (a dotted key "pretrain.steps" is one level per dot)."""
  for key, value in values.items():
    head, _, rest = key.partition(".")
    if rest:
      value, key = {rest: value}, head
    if isinstance(value, dict):
      if key not in node:
        node[key] = ml_collections.ConfigDict()
      _deep_update(node[key], value)
    else:
      node[key] = value


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
    unknown = set(a) - {"name", "preset", "pretrain", "overrides", "paper", "model"}
    if unknown:
      raise StudyError(f"arm {a['name']!r}: unknown keys {sorted(unknown)}")
    if a["name"] in seen:
      raise StudyError(f"two arms are named {a['name']!r}")
    seen.add(a["name"])
    a.setdefault("preset", "embbert")
    a.setdefault("pretrain", False)
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
    _set_field(cfg, key, value, f"arm {arm['name']!r}")
  configs.apply_overrides(cfg, study.get("train_sets", ()))
  cfg.task = str(task)
  cfg.seed = study.seed
  cfg.pretrain.steps = study.pretrain_steps if arm["pretrain"] else 0
  cfg.wandb.mode = study.wandb
  cfg.wandb.group = study.name
  cfg.wandb.name = f"{arm['name']}-{task_slug(task)}"
  configs.validate(cfg.model)
  return cfg


def _set_field(cfg, key: str, value: Any, where: str) -> None:
  try:
    node, leaf = configs.dotted_parent(cfg, key)
  except KeyError:
    raise StudyError(f"{where}: unknown training field {key!r}") from None
  try:
    node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], float) else value
  except (TypeError, ValueError) as e:
    raise StudyError(f"{where}: bad value for {key!r}: {e}") from None


def task_slug(task: str) -> str:
  return Path(str(task)).stem.replace("/", "_")


# ------------------------------------------------------------------------------ the sweep's frontier


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


# ----------------------------------------------------------------------------------------- the runs


def pretrain_config(cfg):
  """The fields of `cfg` pre-training reads, on a neutral fine-tuning part: equal across tasks."""
  from embbert_jax import train
  p = train.get_config(cfg.preset)
  p.model = cfg.model
  for key in ("seed", "corpus", "cache_dir", "log_every", "grad_clip", "b1", "b2", "eps", "weight_decay"):
    p[key] = cfg[key]
  p.pretrain = cfg.pretrain
  p.wandb = cfg.wandb.copy_and_resolve_references()
  p.wandb.name = cfg.wandb.name.rsplit("-", 1)[0] + "-pretrain" if cfg.wandb.name else ""
  p.task = ""
  return p


def pretrain_dir(out: Path, arm: str, pcfg) -> Path:
  digest = hashlib.sha256(pcfg.to_json(sort_keys=True).encode()).hexdigest()[:10]
  return out / "pretrain" / f"{arm}-{digest}"


def run_arm(study, arm: dict, task: str, out: Path, log=print) -> dict[str, Any]:
  """Trains (or loads) one arm on one task; returns its result record (status "ok" or "failed")."""
  from embbert_jax import train
  wd = out / "runs" / task_slug(task) / arm["name"]
  done = wd / RESULT_FILE
  cfg = arm_config(study, arm, task)
  rec = base_record(study, arm, task, cfg)
  if done.is_file():
    old = json.loads(done.read_text())
    if old.get("config_hash") == rec["config_hash"]:
      return {**old, "skipped": True}
    return {**rec, "status": "failed", "error": f"{done} holds a result of other settings; use another --out "
                                                "(or delete that folder) to run this arm afresh"}
  same = find_reusable(study.reuse, task, rec["config_hash"])
  if same is not None:  # the same training (wandb aside) finished in another study: its numbers are these
    log(f"  {arm['name']}: reusing the identical run {same.parent}")
    old = json.loads(same.read_text())
    old = {**old, **{k: rec[k] for k in ("study", "arm", "preset", "paper")}, "reused_from": str(same.parent)}
    _write_json(done, old)
    return {**old, "skipped": True}
  t0 = time.perf_counter()
  try:
    if cfg.pretrain.steps > 0:
      pcfg = pretrain_config(cfg)
      pdir = pretrain_dir(out, arm["name"], pcfg)
      pdir.parent.mkdir(parents=True, exist_ok=True)
      with open(pdir.with_suffix(".lock"), "w") as lock:  # one process of a study pre-trains, others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (pdir / "result.json").is_file():
          log(f"  pre-training {arm['name']} for {cfg.pretrain.steps} steps in {pdir}")
          train.pretrain(pcfg, pdir)
      cfg.init_from = str(pdir)
      rec["pretrain_dir"] = str(pdir)
    res = train.run_seeds(cfg, wd, study.seeds)
  except data.DataError:
    raise  # the task itself is unusable: not this arm's failure
  except (train.TrainingDiverged, configs.ConfigError, ValueError, RuntimeError, FloatingPointError,
          TypeError) as e:
    first = str(e).splitlines()[0] if str(e) else ""
    rec.update(status="failed", error=f"{type(e).__name__}: {first}"[:300])
    rec["wall_s"] = time.perf_counter() - t0
    return rec
  rec.update(status="ok", summary={k: list(v) for k, v in res["summary"].items()},
             runs=[_run_brief(r) for r in res["runs"]], wall_s=time.perf_counter() - t0,
             failed_seeds=[{"seed": f.get("seed"), "error": f.get("error")} for f in res.get("failed", [])])
  _write_json(done, rec)
  return rec


def _write_json(path: Path, obj: dict) -> None:
  data.write_text_atomic(path, json.dumps(obj, indent=2))


def find_reusable(folders: Iterable[str], task: str, config_hash: str) -> Path | None:
  """A finished arm of the same task and training config in another study's output folder, if any."""
  for folder in folders:
    for path in sorted((Path(folder) / "runs" / task_slug(task)).glob(f"*/{RESULT_FILE}")):
      rec = json.loads(path.read_text())
      if rec.get("config_hash") == config_hash and rec.get("status") == "ok":
        return path
  return None


def _run_brief(r: dict) -> dict:
  keep = ("validation", "test", "metric", "best_step", "steps", "train_time_s", "seq_len", "steps_per_s",
          "workdir")
  return {k: r[k] for k in keep if k in r}


def base_record(study, arm: dict, task: str, cfg) -> dict[str, Any]:
  m = cfg.model
  return {"study": study.name, "arm": arm["name"], "task": str(task), "preset": arm["preset"],
          "config": arm.get("sweep_config") or describe(m), "pretrain_steps": int(cfg.pretrain.steps),
          "seeds": int(study.seeds), "steps": int(cfg.steps), "learning_rate": float(cfg.learning_rate),
          "params": memory.num_params(m), "fp32_total_bytes": memory.total_bytes(m, "fp32"),
          "int8_total_bytes": memory.total_bytes(m, "int8"), "paper": arm["paper"], "status": "pending",
          "config_hash": _config_digest(cfg, study.seeds)}


def _config_digest(cfg, seeds: int) -> str:
  """What a finished arm must match to be reused: its training config (wandb aside) and seed count."""
  d = json.loads(cfg.to_json())
  d.pop("wandb", None)
  return hashlib.sha256(json.dumps([d, seeds], sort_keys=True).encode()).hexdigest()[:12]


def describe(m) -> str:
  from embbert_jax import space
  return space.describe_model(m)


# ----------------------------------------------------------------------------------------- the table


def result_row(rec: dict) -> dict[str, Any]:
  """One flat row of results.csv."""
  row = {k: rec.get(k) for k in ("study", "arm", "task", "preset", "config", "status", "pretrain_steps",
                                 "seeds", "steps", "learning_rate", "params", "fp32_total_bytes",
                                 "int8_total_bytes")}
  summary = rec.get("summary") or {}
  for split in ("test", "validation"):
    for m in METRICS:
      mean, std = summary.get(f"{split}/{m}", (None, None))
      row[f"{split}_{m}_mean"], row[f"{split}_{m}_std"] = mean, std
  paper = rec.get("paper") or {}
  row["paper_value"], row["paper_metric"] = paper.get("value"), paper.get("metric", "")
  row["wall_s"] = rec.get("wall_s")
  row["error"] = rec.get("error", "")
  return row


def mean_std(rec: dict, key: str, scale: float = 100.0, digits: int = 1) -> str:
  """"81.2 ± 0.4" (std omitted for one seed), "failed" or "-"."""
  if rec.get("status") == "failed":
    return "failed"
  summary = rec.get("summary") or {}
  if key not in summary:
    return "-"
  mean, std = summary[key]
  text = f"{mean * scale:.{digits}f}"
  return text + (f" ± {std * scale:.{digits}f}" if rec.get("seeds", 1) > 1 else "")


def paper_cell(paper: dict) -> str:
  """The spec's number for an arm: "87.19 (TinyNLP acc)", or "-" where the spec has none."""
  if not paper or paper.get("value") is None:
    return "-"
  return f"{paper['value']:g} ({paper.get('metric', '')})".replace(" ()", "")


def format_markdown(study, records: list[dict]) -> str:
  """Rows = arms, columns = memory, then accuracy and MCC per task (mean ± std, in %), then the paper."""
  tasks = list(dict.fromkeys(r["task"] for r in records))
  arms = list(dict.fromkeys(r["arm"] for r in records))
  by = {(r["arm"], r["task"]): r for r in records}
  cols = ["arm", "config", "pre-train", "params", "fp32 total", "int8 total"]
  for t in tasks:
    cols += [f"{task_slug(t)} acc", f"{task_slug(t)} MCC"]
  cols += ["paper"]
  seeds = max((r.get("seeds", 1) for r in records), default=1)
  over = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
  lines = [f"Study {study.name}{' (--quick)' if study.get('quick_mode') else ''}: test accuracy and MCC in % "
           f"({over}); memory = weights + "
           f"activations (spec section 3). {study.description}".rstrip(), "",
           "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  for a in arms:
    first = next(by[(a, t)] for t in tasks if (a, t) in by)
    cells = [a, first.get("config", ""), f"{first['pretrain_steps']:,}" if first["pretrain_steps"] else "no",
             f"{first['params']:,}", memory.format_bytes(first["fp32_total_bytes"]),
             memory.format_bytes(first["int8_total_bytes"])]
    for t in tasks:
      r = by.get((a, t), {})
      cells += [mean_std(r, "test/accuracy"), mean_std(r, "test/mcc")]
    cells.append(paper_cell(first.get("paper") or {}))
    lines.append("| " + " | ".join(cells) + " |")
  failed = [r for r in records if r.get("status") == "failed"]
  for r in failed:
    lines.append(f"\nfailed: {r['arm']} on {r['task']}: {r.get('error', '')}")
  own = [r for r in records if not r.get("reused_from")]
  wall = sum(r.get("wall_s") or 0 for r in own)
  steps = sorted({r["steps"] for r in records if r.get("steps")})
  reused = f", {len(records) - len(own)} reused from another study" if len(own) < len(records) else ""
  lines += ["", f"{len(records)} runs ({len(failed)} failed{reused}); fine-tuning steps "
            f"{', '.join(map(str, steps))} (0 = the recipe's epochs); {wall / 60:.1f} min of wall time "
            "summed over this study's runs (pre-training included)"]
  return "\n".join(lines)


def write_tables(study, records: list[dict], out: Path) -> dict[str, Path]:
  out.mkdir(parents=True, exist_ok=True)
  files = {"csv": out / "results.csv", "md": out / "results.md", "jsonl": out / "results.jsonl"}
  rows = [result_row(r) for r in records]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["arm"])
  w.writeheader()
  w.writerows(rows)
  files["csv"].write_text(buf.getvalue())
  files["md"].write_text(format_markdown(study, records) + "\n")
  files["jsonl"].write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
  return files


# ---------------------------------------------------------------------------------------- the figure


def figure(study, records: list[dict], path: Path) -> Path:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if study.figure == "scaling":
    fig = _scaling_figure(plt, study, records)
  else:
    fig = _bars_figure(plt, study, records)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _metric(r: dict, key: str = "test/accuracy") -> tuple[float, float]:
  """(mean, std) of a record's metric in %, NaN for a failed or missing run."""
  if r.get("status") != "ok" or key not in r.get("summary", {}):
    return math.nan, 0.0
  mean, std = r["summary"][key]
  return 100 * mean, 100 * std


def _bars_figure(plt, study, records):
  """Accuracy (with the paper's numbers) and MCC per arm, one bar per task: MCC shows which arms still
  predict one class, which accuracy hides on an unbalanced task such as sms_spam."""
  tasks = list(dict.fromkeys(r["task"] for r in records))
  arms = list(dict.fromkeys(r["arm"] for r in records))
  by = {(r["arm"], r["task"]): r for r in records}
  fig, axes = plt.subplots(2, 1, figsize=(max(6.5, 1.1 * len(arms) + 2), 8), dpi=120, sharex=True)
  width = 0.8 / max(1, len(tasks))
  panels = ((axes[0], "test/accuracy", "test accuracy (%)"), (axes[1], "test/mcc", "test MCC (%)"))
  for ax, key, label in panels:
    for j, t in enumerate(tasks):
      vals = [_metric(by.get((a, t), {}), key) for a in arms]
      xs = [i - 0.4 + width * (j + 0.5) for i in range(len(arms))]
      ax.bar(xs, [v[0] for v in vals], width, yerr=[v[1] for v in vals], capsize=2,
             label=f"{task_slug(t)} (this run)", color=f"C{j}", alpha=0.85)
      for x, (v, _) in zip(xs, vals):
        if math.isnan(v):
          ax.text(x, 0.5, "failed", rotation=90, ha="center", va="bottom", fontsize=7,
                  transform=ax.get_xaxis_transform())
    ax.set_ylabel(label)
    ax.grid(True, axis="y", alpha=0.3)
  ax = axes[0]
  papers = [(i, by_first(by, a, tasks).get("paper") or {}) for i, a in enumerate(arms)]
  pts = [(i, p["value"], p.get("metric", "")) for i, p in papers if p.get("value") is not None]
  if pts:
    metric = ", ".join(dict.fromkeys(m for _, _, m in pts))
    ax.scatter([i for i, _, _ in pts], [v for _, v, _ in pts], marker="D", s=40, color="k", zorder=5,
               label=f"paper, {metric} (different tasks)")
  lo = min([v for r in records for v in [_metric(r)[0]] if not math.isnan(v)] + [v for _, v, _ in pts] + [50])
  ax.set_ylim(max(0, lo - 10), 100)
  axes[1].set_ylim(min(0, axes[1].get_ylim()[0]), 100)
  axes[1].axhline(0, color="k", lw=0.6)
  axes[1].set_xticks(range(len(arms)))
  axes[1].set_xticklabels(arms, rotation=25, ha="right", fontsize=8)
  quick = " (--quick)" if study.get("quick_mode") else ""
  ax.set_title(f"{study.name}{quick}: test accuracy and MCC per arm (MCC 0 = one class predicted); "
               "the paper's numbers are on other tasks", fontsize=9)
  handles, labels = ax.get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(labels), frameon=False)
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  return fig


def by_first(by: dict, arm: str, tasks: list[str]) -> dict:
  return next((by[(arm, t)] for t in tasks if (arm, t) in by), {})


def _scaling_figure(plt, study, records):
  from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
  from embbert_jax import plotting
  tasks = list(dict.fromkeys(r["task"] for r in records))
  fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), dpi=120, sharey=True)
  for ax, policy in zip(axes, ("fp32", "int8")):
    for j, t in enumerate(tasks):
      rs = sorted((r for r in records if r["task"] == t and r.get("status") == "ok"),
                  key=lambda r: r[f"{policy}_total_bytes"])
      for kind, marker, ls in (("preset", "o", "-"), ("frontier", "s", "none")):
        sel = [r for r in rs if r["arm"].startswith("frontier-") == (kind == "frontier")]
        if not sel:
          continue
        xs = [r[f"{policy}_total_bytes"] / 1e6 for r in sel]
        ys, es = zip(*[_metric(r) for r in sel])
        ax.errorbar(xs, ys, yerr=es, color=f"C{j}", marker=marker, ls=ls, ms=5, capsize=2,
                    label=f"{task_slug(t)}: {'presets' if kind == 'preset' else 'sweep frontier configs'}")
        for x, y, r in zip(xs, ys, sel):
          ax.annotate(r["arm"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6, color=f"C{j}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"total memory, {policy}: weights + activations (MB, log scale)")
    ax.grid(True, which="both", alpha=0.25)
    ax.set_title(f"{policy}" + (" (paper's EmbBERT-Q policy)" if policy == "int8" else ""), fontsize=9)
    if policy == "fp32":
      ax.set_ylabel("test accuracy (%), this run")
      ax2 = ax.twinx()
      pts = plotting.PAPER_POINTS
      ax2.plot([m / 1e6 for _, m, _ in pts], [s for _, _, s in pts], color="k", ls=":", marker="D", ms=5,
               label="paper, GLUE (different tasks; right axis)")
      for name, m, s in pts:
        ax2.annotate(f"{name} {s:g}", (m / 1e6, s), textcoords="offset points", xytext=(4, -10), fontsize=6)
      ax2.set_ylabel("paper: GLUE score (different tasks)")
      h1, l1 = ax.get_legend_handles_labels()
      h2, l2 = ax2.get_legend_handles_labels()
      ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
  fig.suptitle(f"{study.name}{' (--quick)' if study.get('quick_mode') else ''}: accuracy vs memory "
               "(paper's points: GLUE, different tasks, for the shape only)", fontsize=10)
  fig.tight_layout()
  return fig


# -------------------------------------------------------------------------------------------- driver


def plan(study) -> list[tuple[dict, str]]:
  """Every (arm, task) of the study, each config built once to catch bad input before anything trains."""
  arms = arm_list(study)
  if study.frontier:
    if study.figure != "scaling":
      raise StudyError("frontier configs belong to a scaling study (figure='scaling')")
    template = next((a for a in arms if a["preset"] == "embbert"), arms[0])
    arms += frontier_arms(study.frontier, {"pretrain": template["pretrain"]})
  if not study.tasks:
    raise StudyError("the study has no tasks")
  if study.seeds < 1:
    raise StudyError("seeds must be >= 1")
  pairs = [(a, t) for t in study.tasks for a in arms]
  for a, t in pairs:
    arm_config(study, a, t)
  return pairs


def run_study(study, out: Path, log=print) -> dict[str, Any]:
  """Runs (or resumes) every arm on every task, then writes the tables and the figure."""
  from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
  pairs = plan(study)
  out = Path(out).resolve()  # orbax wants absolute checkpoint paths
  out.mkdir(parents=True, exist_ok=True)
  (out / "study.json").write_text(study.to_json(indent=2))
  records = []
  with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                disable=not sys.stderr.isatty()) as bar:
    job = bar.add_task(study.name, total=len(pairs))
    for i, (arm, task) in enumerate(pairs):
      bar.update(job, description=f"{study.name}: {arm['name']} on {task_slug(task)}")
      rec = run_arm(study, arm, task, out, log=log)
      records.append(rec)
      log(f"[{i + 1}/{len(pairs)}] {task_slug(task)} / {arm['name']}: " + _outcome(rec))
      bar.advance(job)
      files = write_tables(study, records, out)  # after every arm: partial tables while the study runs
  files["figure"] = figure(study, records, out / f"{study.name}.png")
  if study.wandb != "disabled":
    _log_summary(study, records, files, out)
  return {"records": records, "files": files, "table": files["md"].read_text()}


def _outcome(rec: dict) -> str:
  if rec["status"] == "failed":
    return f"FAILED ({rec.get('error', '')})"
  acc, mcc = rec["summary"]["test/accuracy"], rec["summary"]["test/mcc"]
  how = "done before, skipped" if rec.get("skipped") else f"{rec.get('wall_s', 0):.0f} s"
  return f"test accuracy {100 * acc[0]:.1f}, MCC {100 * mcc[0]:.1f} ({how})"


def _log_summary(study, records, files, out: Path) -> None:
  """One wandb run per study (job_type experiment-summary) with the table and the figure."""
  from embbert_jax import train
  import wandb
  rows = [result_row(r) for r in records]
  cols = list(rows[0])
  run = wandb.init(project="embbert_jax", group=study.name, name=f"{study.name}-summary",
                   job_type="experiment-summary", mode=train.wandb_mode(study.wandb), dir=str(out),
                   config=json.loads(study.to_json()), reinit="create_new")
  try:
    cell = lambda v: v if v is None or isinstance(v, (int, float, str, bool)) else json.dumps(v)
    run.log({"results": wandb.Table(columns=cols, data=[[cell(r[c]) for c in cols] for r in rows]),
             "figure": wandb.Image(str(files["figure"]))})
  finally:
    run.finish()


def default_out(study) -> Path:
  return Path("runs") / "experiments" / (study.name + ("-quick" if study.get("quick_mode") else ""))


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m embbert_jax.experiment",
                               description="Run a study (experiments/<study>.py): arms x tasks x seeds, "
                                           "results.csv/.md and a figure.")
  ap.add_argument("study", help="a study file (experiments/ablation.py) or its name (ablation)")
  ap.add_argument("--quick", action="store_true", help="the study's small settings (minutes on a CPU)")
  ap.add_argument("--tasks", default=None, help="comma-separated tasks, e.g. rt_polarity,sms_spam")
  ap.add_argument("--seeds", type=int, default=None, help="seeds per arm and task")
  ap.add_argument("--out", default=None, help="output folder (default runs/experiments/<study>[-quick])")
  ap.add_argument("--frontier", default=None, help="scaling: a sweep's frontier.csv / trials.jsonl")
  ap.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"], default=None)
  ap.add_argument("--reuse", default=None, help="comma-separated output folders of other studies: an arm "
                  "with the same task and training config there is reused instead of trained again")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a study field (seeds=3, pretrain_steps=100) or a training field of every "
                       "arm (train.learning_rate=1e-3, train.model.dropout=0)")
  args = ap.parse_args(argv)
  os.environ.setdefault("WANDB_SILENT", "true")
  from embbert_jax import train
  try:
    sets = list(args.set)
    if args.tasks is not None:
      sets.append(f"tasks={tuple(t for t in args.tasks.split(',') if t)!r}")
    if args.seeds is not None:
      sets.append(f"seeds={args.seeds}")
    if args.frontier is not None:
      sets.append(f"frontier={args.frontier}")
    if args.wandb is not None:
      sets.append(f"wandb={args.wandb}")
    if args.reuse is not None:
      sets.append(f"reuse={tuple(r for r in args.reuse.split(',') if r)!r}")
    study = load_study(args.study, args.quick, sets)
    out = Path(args.out) if args.out else default_out(study)
  except (StudyError, configs.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  train.enable_compilation_cache()
  try:
    result = run_study(study, out)
  except (StudyError, configs.ConfigError, data.DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(result["table"])
  print(f"\nfiles: {result['files']['csv']}, {result['files']['md']}, {result['files']['figure']}")
  return 1 if any(r["status"] == "failed" for r in result["records"]) else 0


if __name__ == "__main__":
  sys.exit(main())
