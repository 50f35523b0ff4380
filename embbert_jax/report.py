"""A study's results as files: results.csv / results.jsonl (one row per arm and task), results.md (mean ±
std, parameters, fp32 and int8 total memory from memory.py, the paper's number for the arm where the spec
has one), the figure (<name>.png: bars per arm, or accuracy vs memory for a scaling study) and a wandb
summary run with the table and the figure. Every file is written whole (files.py)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from embbert_jax import memory
from embbert_jax.files import save_figure, write_text_atomic
from embbert_jax.study import mode_label, task_slug


METRICS = ("accuracy", "mcc", "macro_f1")


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
  cols = ["arm", "config", "init", "params", "fp32 total", "int8 total"]
  for t in tasks:
    cols += [f"{task_slug(t)} acc", f"{task_slug(t)} MCC"]
  cols += ["paper"]
  seeds = max((r.get("seeds", 1) for r in records), default=1)
  over = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
  lines = [f"Study {study.name}{mode_label(study)}: test accuracy and MCC in % "
           f"({over}); memory = weights + "
           f"activations (spec section 3). {study.description}".rstrip(), "",
           "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  for a in arms:
    first = next(by[(a, t)] for t in tasks if (a, t) in by)
    init = (f"{first['pretrain_steps']:,} pre-training steps" if first["pretrain_steps"] else
            first.get("init") or "scratch")  # the arm's `train --init`, "" = scratch
    cells = [a, first.get("config", ""), init,
             f"{first['params']:,}", memory.format_bytes(first["fp32_total_bytes"]),
             memory.format_bytes(first["int8_total_bytes"])]
    for t in tasks:
      r = by.get((a, t), {})
      cells += [mean_std(r, "test/accuracy"), mean_std(r, "test/mcc")]
    cells.append(paper_cell(first.get("paper") or {}))
    lines.append("| " + " | ".join(cells) + " |")
  lines += reference_rows(records, tasks)
  failed = [r for r in records if r.get("status") == "failed"]
  for r in failed:
    lines.append(f"\nfailed: {r['arm']} on {r['task']}: {r.get('error', '')}")
  own = [r for r in records if not r.get("reused_from")]
  wall = sum(r.get("wall_s") or 0 for r in own)
  steps = sorted({r["steps"] for r in records if r.get("steps")})
  reused = f", {len(records) - len(own)} reused from another study" if len(own) < len(records) else ""
  length = f"fine-tuning steps {', '.join(map(str, steps))}" if steps else "fine-tuning for the recipe's epochs"
  lines += ["", f"{len(records)} runs ({len(failed)} failed{reused}); {length}; {wall / 60:.1f} min of wall time "
            "summed over this study's runs (pre-training included)"]
  return "\n".join(lines)


def reference_rows(records: list[dict], tasks: list[str]) -> list[str]:
  """Table rows for each reference model of the tasks (the majority class, TF-IDF + a linear model: a
  record's "references", baselines.compute) on the same test split, in %; then any note (no sklearn)."""
  refs = {}
  for r in records:  # the first record of a task that has them (a failed arm has none)
    if r.get("references"):
      refs.setdefault(r["task"], r["references"])
  names = list(dict.fromkeys(n for ref in refs.values() for n in ref["baselines"]))
  rows = []
  for name in names:
    cells = [f"reference: {name}", "same split", "", "", "", ""]
    for t in tasks:
      test = refs.get(t, {}).get("baselines", {}).get(name, {}).get("test", {})
      cells += [f"{100 * test[k]:.1f}" if k in test else "" for k in ("accuracy", "mcc")]
    rows.append("| " + " | ".join(cells + [""]) + " |")
  notes = sorted({ref["note"] for ref in refs.values() if ref.get("note")})
  return rows + [f"\n{n}" for n in notes]


def write_tables(study, records: list[dict], out: Path) -> dict[str, Path]:
  out.mkdir(parents=True, exist_ok=True)
  files = {"csv": out / "results.csv", "md": out / "results.md", "jsonl": out / "results.jsonl"}
  rows = [result_row(r) for r in records]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["arm"])
  w.writeheader()
  w.writerows(rows)
  write_text_atomic(files["csv"], buf.getvalue())
  write_text_atomic(files["md"], format_markdown(study, records) + "\n")
  write_text_atomic(files["jsonl"], "".join(json.dumps(r, default=str) + "\n" for r in records))
  return files


def figure(study, records: list[dict], path: Path) -> Path:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if study.figure == "scaling":
    fig = _scaling_figure(plt, study, records)
  else:
    fig = _bars_figure(plt, study, records)
  path = save_figure(fig, path)
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
  ax.set_title(f"{study.name}{mode_label(study)}: test accuracy and MCC per arm (MCC 0 = one class predicted); "
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
  fig.suptitle(f"{study.name}{mode_label(study)}: accuracy vs memory "
               "(paper's points: GLUE, different tasks, for the shape only)", fontsize=10)
  fig.tight_layout()
  return fig


def log_summary(study, records, files, out: Path) -> None:
  """One wandb run per study (job_type experiment-summary) with the table and the figure."""
  import wandb
  from embbert_jax import runlog
  rows = [result_row(r) for r in records]
  cols = list(rows[0])
  run = wandb.init(project="embbert_jax", group=study.name, name=f"{study.name}-summary",
                   job_type="experiment-summary", mode=runlog.wandb_mode(study.wandb), dir=str(out),
                   config=json.loads(study.to_json()), reinit="create_new")
  try:
    cell = lambda v: v if v is None or isinstance(v, (int, float, str, bool)) else json.dumps(v)
    run.log({"results": wandb.Table(columns=cols, data=[[cell(r[c]) for c in cols] for r in rows]),
             "figure": wandb.Image(str(files["figure"]))})
  finally:
    run.finish()
