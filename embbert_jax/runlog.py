"""What a training run logs: metrics.jsonl in its folder (appended a whole line at a time, rewritten
atomically on resume: files.py) and a wandb run (offline unless an API key is set) that resumes with the
folder (its id in wandb_id.txt)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import jax
import numpy as np

from embbert_jax import configs, files


class Logger:
  """metrics.jsonl in the workdir plus an optional wandb run that resumes with the workdir."""

  def __init__(self, workdir: Path, cfg, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():  # drop rows a killed run wrote after its last checkpoint (and a torn last row)
      rows = [r for r in files.read_jsonl(self.path) if r["step"] <= resume_step]
      files.write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows))
    self.run = _wandb_run(workdir, cfg)

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


def _wandb_run(workdir: Path, cfg):
  mode = wandb_mode(cfg.wandb.mode)
  if mode == "disabled":
    return None
  import wandb
  id_file = workdir / "wandb_id.txt"
  run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
  files.write_text_atomic(id_file, run_id)
  return wandb.init(project=cfg.wandb.project, group=cfg.wandb.group or None, name=cfg.wandb.name or None,
                    config=cfg.to_dict(), dir=str(workdir), id=run_id, resume="allow", mode=mode,
                    reinit="create_new")
