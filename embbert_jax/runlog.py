"""What a training run logs: metrics.jsonl in its folder (appended a whole line at a time, rewritten
atomically on resume: files.py) and a wandb run (offline unless an API key is set) that resumes with the
folder (its id in wandb_id.txt).

The wandb run's folder is $WANDB_DIR if set (a sweep sets its output folder, so that one `wandb sync
<out>/wandb` finds every trial and the summary), else the run's own folder. Its job_type is $WANDB_JOB_TYPE
if set (a sweep: "trial"), else the kind of run ("train", "pretrain"); its tags the kind, the task and
the model preset, or $WANDB_TAGS instead of the preset (a sweep: the space family, the policy); its config and summary hold the model's memory under every dtype policy (weight,
activation and total bytes, memory.estimate) and its parameter count, so the wandb UI can plot a metric
against memory. `split_time` splits a training call's wall time into compile, steps, evaluation and
checkpoints.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import jax
import numpy as np

from embbert_jax import configs, files, memory


class Logger:
  """metrics.jsonl in the workdir plus an optional wandb run that resumes with the workdir."""

  def __init__(self, workdir: Path, cfg, resume_step: int, kind: str = "train"):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():  # drop rows a killed run wrote after its last checkpoint (and a torn last row)
      rows = [r for r in files.read_jsonl(self.path) if r["step"] <= resume_step]
      files.write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows))
    self.run = _wandb_run(workdir, cfg, "train" if kind == "finetune" else kind)

  def log(self, step: int, values: dict[str, Any]) -> None:
    row = {"step": int(step), **{k: _py(v) for k, v in values.items()}}
    files.append_line(self.path, json.dumps(row))
    if self.run is not None:
      self.run.log({k: v for k, v in row.items() if k != "step"}, step=int(step))

  def close(self, summary: dict | None = None) -> None:
    if self.run is not None:
      if summary:
        self.run.summary.update(configs.flatten_dict(summary, "/"))
      self.run.finish()


def _py(v):
  return float(v) if isinstance(v, (np.floating, np.integer, jax.Array, float)) else v


def wandb_mode(mode: str) -> str:
  if mode == "auto":
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
  return mode


def model_memory(model) -> dict[str, Any]:
  """{"memory": {policy: {weight_bytes, activation_bytes, total_bytes}}, "params": N} of a model config."""
  reports = {p: memory.estimate(model, p) for p in memory.POLICIES}
  return {"memory": {p: {"weight_bytes": r.weight_bytes, "activation_bytes": r.activation_bytes,
                         "total_bytes": r.total_bytes} for p, r in reports.items()},
          "params": memory.num_params(model)}


def _wandb_run(workdir: Path, cfg, kind: str):
  mode = wandb_mode(cfg.wandb.mode)
  if mode == "disabled":
    return None
  import wandb
  id_file = workdir / "wandb_id.txt"
  run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
  files.write_text_atomic(id_file, run_id)
  size = model_memory(cfg.model) if "model" in cfg else {}
  task = Path(str(cfg.get("task", "")).split(":")[0]).stem
  more = os.environ.get("WANDB_TAGS", "").split(",") if os.environ.get("WANDB_TAGS") else [cfg.get("preset", "")]
  tags = [t[:64] for t in dict.fromkeys((kind, task, *map(str, more))) if t]
  run = wandb.init(project=cfg.wandb.project, group=cfg.wandb.group or None, name=cfg.wandb.name or None,
                   job_type=os.environ.get("WANDB_JOB_TYPE") or kind, tags=tags,
                   config={**cfg.to_dict(), **size}, dir=os.environ.get("WANDB_DIR") or str(workdir),
                   id=run_id, resume="allow", mode=mode, reinit="create_new")
  run.summary.update(configs.flatten_dict(size, "/"))
  return run


def split_time(t: dict, elapsed: float, steps: int) -> dict:
  """fit's wall time split into compile, steps, evaluation, checkpoints and the rest (data, logging).

  The first step, the first step of every other batch shape (bucketed lengths) and the first evaluation
  include their programs' compiles (or cache loads); their excess over the steady cost is compile (as
  steps, new shapes made a sweep's calibration read 143-175 ms for a ~5 ms step)."""
  evals, news = t["evals_s"], t.get("new_shape_s", [])
  eval_steady = float(np.median(evals[1:])) if len(evals) > 1 else (evals[0] if evals else 0.0)
  rest = max(elapsed - t["first_step_s"] - sum(news) - sum(evals) - t["checkpoint_s"], 0.0)
  if not steps:  # a resumed call with nothing left to train: no rate to report
    return {"compile_s": 0.0, "train_s": 0.0, "eval_s": sum(evals), "checkpoint_s": t["checkpoint_s"],
            "step_s": None, "eval_each_s": evals[0] if evals else 0.0, "evals": len(evals)}
  step_s = rest / max(steps - 1 - len(news), 1)  # the steady steps carry the loop's host work too
  compile_step = max(t["first_step_s"] - step_s, 0.0) + sum(max(x - step_s, 0.0) for x in news)
  compile_eval = max(evals[0] - eval_steady, 0.0) if evals else 0.0
  return {"compile_s": compile_step + compile_eval, "train_s": step_s * steps,
          "eval_s": sum(evals) - compile_eval, "checkpoint_s": t["checkpoint_s"], "step_s": step_s,
          "eval_each_s": eval_steady, "evals": len(evals)}
