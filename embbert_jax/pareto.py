"""Sweep results: ledger trials as flat rows, the Pareto frontier, and its table, files and wandb summary.

The frontier is the set of completed trials that no other completed trial dominates, where a dominates b
when a needs no more memory and scores at least as well on the validation metric, and is strictly
better in one of the two. Memory is weights + activations under the sweep's dtype policy. Test metrics
are reported beside it but never used to choose.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from embbert_jax import memory

METRICS = ("accuracy", "mcc", "macro_f1")
_STATUS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
           "WAITING": "waiting"}


def trial_row(t, policy: str) -> dict[str, Any]:
  """A ledger trial (optuna FrozenTrial) as one flat dict: the columns of trials.csv."""
  a = t.user_attrs
  row: dict[str, Any] = {
      "trial": t.number, "status": _STATUS.get(t.state.name, t.state.name.lower()),
      "family": a.get("family", ""), "config": a.get("describe", ""), "hash": a.get("hash", ""),
      "params": a.get("params"), "policy": policy,
      "memory_bytes": (a.get("bytes") or {}).get(policy, {}).get("total"),
      "metric": a.get("metric", ""), "value": None,
  }
  for pol in memory.POLICIES:
    for part in ("weight", "activation", "total"):
      row[f"{pol}_{part}_bytes"] = (a.get("bytes") or {}).get(pol, {}).get(part)
  for split in ("validation", "test"):
    for m in METRICS:
      row[f"{split}_{m}"] = (a.get(split) or {}).get(m)
  if t.state.name == "COMPLETE" and t.values:
    row["value"] = t.values[0]
  elif a.get("curve"):
    row["value"] = a["curve"][-1][1]  # pruned: its last validation, for the plot only
  for k in ("best_step", "steps", "train_time_s", "steps_per_s", "tokens_per_s", "seq_len", "pruned_at",
            "error"):
    row[k] = a.get(k)
  row["attempts"] = t.system_attrs.get("embbert:attempts", 0)
  row["preempted"] = len(t.system_attrs.get("embbert:preempted", []))
  row["worker"] = t.system_attrs.get("embbert:worker", "")
  row["point"] = a.get("config", {})
  row["model"] = a.get("model", {})
  return row


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
  """Indices of the non-dominated (memory, value) points: minimise memory, maximise value.

  Identical points are all kept (neither dominates the other). NaN values are never on the front.
  O(n log n): sorted by memory then value descending, a point is on the front iff no earlier point has a
  higher value, or the same value at strictly less memory.
  """
  order = sorted((i for i, (m, v) in enumerate(points) if not math.isnan(v)),
                 key=lambda i: (points[i][0], -points[i][1]))
  front, best_v, best_m = [], -math.inf, math.inf
  for i in order:
    m, v = points[i]
    if v > best_v:
      front.append(i)
      best_v, best_m = v, m
    elif v == best_v and m == best_m:
      front.append(i)
  return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def frontier_rows(rows: list[dict]) -> list[dict]:
  """The completed rows on the frontier, by memory."""
  done = [r for r in rows if r["status"] == "complete" and r["value"] is not None
          and r["memory_bytes"] is not None]
  return [done[i] for i in pareto_front([(r["memory_bytes"], r["value"]) for r in done])]


def counts(rows: list[dict]) -> dict[str, int]:
  out: dict[str, int] = {}
  for r in rows:
    out[r["status"]] = out.get(r["status"], 0) + 1
  return out


def _fmt(v, digits=4) -> str:
  return "-" if v is None else f"{v:.{digits}f}"


def format_table(rows: list[dict], front: list[dict], settings: dict[str, Any]) -> str:
  """The frontier as a Markdown table (readable on a terminal, pasteable into a README)."""
  metric = settings.get("metric") or (front[0]["metric"] if front else "") or "mcc"
  policy = settings.get("policy", "fp32")
  c = counts(rows)
  head = (f"Pareto frontier of sweep {settings.get('study', '?')}: {len(front)} of {c.get('complete', 0)} "
          f"complete trials ({c.get('pruned', 0)} pruned, {c.get('failed', 0)} failed, "
          f"{c.get('running', 0) + c.get('waiting', 0)} unfinished); validation {metric} vs {policy} memory"
          + (f", budget {memory.format_bytes(settings['budget'])}" if settings.get("budget") else ""))
  cols = ["trial", f"{policy} memory", "params", f"val {metric}", f"test {metric}", "test acc", "config",
          "train s"]
  lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  for r in front:
    cells = [str(r["trial"]), memory.format_bytes(r["memory_bytes"]), f"{r['params']:,}", _fmt(r["value"]),
             _fmt(r.get(f"test_{metric}")), _fmt(r.get("test_accuracy")), r["config"],
             "-" if r["train_time_s"] is None else f"{r['train_time_s']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  if not front:
    lines.append("| (no completed trial yet) |" + " |" * (len(cols) - 1))
  spent = sum(r["train_time_s"] or 0 for r in rows)
  lines += ["", f"{len(rows)} trials, {spent / 60:.1f} min of training in all"]
  return "\n".join(lines)


_CSV_SKIP = ("point", "model")


def write_files(rows: list[dict], front: list[dict], settings: dict[str, Any], out: Path) -> dict[str, Path]:
  """trials.csv, trials.jsonl, frontier.csv, frontier.md and frontier.png in `out`."""
  from embbert_jax import plotting
  out.mkdir(parents=True, exist_ok=True)
  on_front = {r["trial"] for r in front}
  files = {"trials_csv": out / "trials.csv", "trials_jsonl": out / "trials.jsonl",
           "frontier_csv": out / "frontier.csv", "frontier_md": out / "frontier.md",
           "plot": out / "frontier.png"}
  cols = [k for k in rows[0] if k not in _CSV_SKIP] + ["pareto"] if rows else ["trial"]
  for key, subset in (("trials_csv", rows), ("frontier_csv", front)):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in subset:
      w.writerow({**r, "pareto": r["trial"] in on_front})
    _write_atomic(files[key], buf.getvalue())
  _write_atomic(files["trials_jsonl"], "".join(
      json.dumps({**r, "pareto": r["trial"] in on_front}, default=str) + "\n" for r in rows))
  _write_atomic(files["frontier_md"], format_table(rows, front, settings) + "\n")
  tmp = files["plot"].with_name(f".{os.getpid()}.{files['plot'].name}")
  plotting.frontier_figure(rows, front, tmp, budget=settings.get("budget"),
                           min_budget=settings.get("min_budget"), policy=settings.get("policy", "fp32"),
                           metric=settings.get("metric") or "mcc", title=f"sweep {settings.get('study', '')}")
  os.replace(tmp, files["plot"])
  return files


def _write_atomic(path: Path, text: str) -> None:
  """Workers finishing together write the same files: each replaces them whole, never interleaved."""
  tmp = path.with_name(f".{os.getpid()}.{path.name}")
  tmp.write_text(text)
  os.replace(tmp, path)


def log_wandb_summary(rows: list[dict], front: list[dict], files: dict[str, Path], settings: dict[str, Any],
                      mode: str, out: Path) -> str | None:
  """One wandb run per sweep (job_type sweep-summary, grouped with the trials): the trials table, the
  frontier table and the frontier plot. Returns the run's local folder."""
  import wandb
  cols = [k for k in rows[0] if k not in _CSV_SKIP] if rows else []
  run = wandb.init(project=settings.get("wandb_project", "embbert_jax"), group=settings.get("study"),
                   name=f"{settings.get('study')}-summary", job_type="sweep-summary", mode=mode,
                   dir=str(out), config={k: v for k, v in settings.items() if not isinstance(v, dict)},
                   reinit="create_new")
  try:
    as_cell = lambda v: v if v is None or isinstance(v, (int, float, str, bool)) else json.dumps(v)
    run.log({"trials": wandb.Table(columns=cols, data=[[as_cell(r[c]) for c in cols] for r in rows]),
             "frontier": wandb.Table(columns=cols, data=[[as_cell(r[c]) for c in cols] for r in front]),
             "frontier_plot": wandb.Image(str(files["plot"]))})
    c = counts(rows)
    run.summary.update({"trials": len(rows), "complete": c.get("complete", 0), "pruned": c.get("pruned", 0),
                        "failed": c.get("failed", 0), "frontier_size": len(front)})
    return run.dir
  finally:
    run.finish()
