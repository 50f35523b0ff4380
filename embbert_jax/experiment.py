"""`python -m embbert_jax.experiment NAME`: a study's arms x tasks x seeds, one table.

    python -m embbert_jax.experiment baselines_2mb --quick --tasks rt_polarity,sms_spam
    python -m embbert_jax.experiment ablation --seeds 3 --set train.learning_rate=1e-4
    python -m embbert_jax.experiment scaling --quick --frontier runs/sweeps/NAME/frontier.csv
    python -m embbert_jax.experiment my_study.py          # a study file of your own

What a study file holds is study.py's docstring; the tables and the figure are report.py's.

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
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from embbert_jax import baselines, configs, data, inits, memory, report
from embbert_jax.files import write_json_atomic, write_text_atomic
from embbert_jax.study import MODES, StudyError, arm_config, load_study, plan, task_slug


RESULT_FILE = "arm_result.json"


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
    train.record_init(inits.carried(cfg), res["runs"])  # each seed's result.json says where it started
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
  write_json_atomic(path, obj)


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
          "init": arm.get("init") or "", "init_from": cfg.init_from,
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


def run_study(study, out: Path, log=print) -> dict[str, Any]:
  """Runs (or resumes) every arm on every task, then writes the tables and the figure."""
  from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
  pairs = plan(study)
  out = Path(out).resolve()  # orbax wants absolute checkpoint paths
  out.mkdir(parents=True, exist_ok=True)
  write_text_atomic(out / "study.json", study.to_json(indent=2))
  records = []
  with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                disable=not sys.stderr.isatty()) as bar:
    job = bar.add_task(study.name, total=len(pairs))
    for i, (arm, task) in enumerate(pairs):
      bar.update(job, description=f"{study.name}: {arm['name']} on {task_slug(task)}")
      rec = run_arm(study, arm, task, out, log=log)
      if rec["status"] == "ok":  # the task's reference lines, fitted on the same split (memoised, cached)
        rec = {**rec, "references": baselines.for_task(task, arm_config(study, arm, task).cache_dir or None)}
      records.append(rec)
      log(f"[{i + 1}/{len(pairs)}] {task_slug(task)} / {arm['name']}: " + _outcome(rec))
      bar.advance(job)
      files = report.write_tables(study, records, out)  # after every arm: partial tables while the study runs
  files["figure"] = report.figure(study, records, out / f"{study.name}.png")
  if study.wandb != "disabled":
    report.log_summary(study, records, files, out)
  return {"records": records, "files": files, "table": files["md"].read_text()}


def _outcome(rec: dict) -> str:
  if rec["status"] == "failed":
    return f"FAILED ({rec.get('error', '')})"
  acc, mcc = rec["summary"]["test/accuracy"], rec["summary"]["test/mcc"]
  how = "done before, skipped" if rec.get("skipped") else f"{rec.get('wall_s', 0):.0f} s"
  return f"test accuracy {100 * acc[0]:.1f}, MCC {100 * mcc[0]:.1f} ({how})"


def default_out(study) -> Path:
  return Path("runs") / "experiments" / (study.name + (f"-{study.mode}" if study.get("mode") else ""))


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m embbert_jax.experiment",
                               description="Run a study (embbert_jax/studies/<name>.py or a file): arms x "
                                           "tasks x seeds, "
                                           "results.csv/.md and a figure.")
  ap.add_argument("study", help="a study name (ablation: embbert_jax/studies/ first, then ./experiments) or "
                  "a .py file")
  modes = ap.add_mutually_exclusive_group()
  modes.add_argument("--quick", action="store_true", help="the study's small settings (minutes on a CPU)")
  modes.add_argument("--cpu", action="store_true", help="the study at a 2-core CPU's budget (hours): 3 seeds, "
                     "3 tasks, the from-scratch recipe to its end, token vectors for every arm")
  ap.add_argument("--tasks", default=None, help="comma-separated tasks, e.g. rt_polarity,sms_spam")
  ap.add_argument("--seeds", type=int, default=None, help="seeds per arm and task")
  ap.add_argument("--out", default=None, help="output folder (default runs/experiments/<study>[-quick|-cpu])")
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
    listed = lambda text: None if text is None else tuple(t for t in text.split(",") if t)
    flags = {"tasks": listed(args.tasks), "seeds": args.seeds, "frontier": args.frontier, "wandb": args.wandb,
             "reuse": listed(args.reuse)}  # typed values, set with configs.set_field
    mode = next((m for m in MODES if getattr(args, m)), "")  # --quick / --cpu
    study = load_study(args.study, mode, args.set, {k: v for k, v in flags.items() if v is not None})
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
