"""Sweep results: ledger trials as flat rows, the Pareto frontier, and its table, files and wandb summary.

The frontier is the set of points that no other point dominates, where a dominates b when a needs no more
memory and scores at least as well on the validation metric, and is strictly better in one of the two.
Memory is weights + activations under the sweep's dtype policy. Test metrics are reported beside it but
never used to choose.

A point is one model config (a shape). Without a train grid a shape has one trial and its point is that
completed trial. With one (space.train_grid), a shape has several member trials, and the two kinds of
axis mean different things to a user:

* repeat axes (`seed`, or a field named `*_seed`) are noise: the members of a *setting* (the same shape
  and the same other knobs) are repeats, so the setting scores the mean over them (the max over seeds
  would reward luck; the table shows the spread). A setting with a failed (NaN) or pruned member has no
  point: a recipe that diverges on some seed is not one to pick, and a pruned member's setting was judged
  hopeless (early_stop.py's rule compares settings by the same mean); a multi-fidelity sweep's final
  seeds are the exception (setting_point: the seeds that succeeded, the failed ones named);
* every other axis (learning rate, weight decay, ...) is tuning: the shape's point is its best setting,
  i.e. what the shape reaches with its tuned hyperparameters, as a user would report it.

trials.csv keeps every member trial as its own row (with train.<knob> columns); the `pareto` column marks
the members of the settings on the frontier.

Reference baselines of the sweep's task (baselines.py: majority class, TF-IDF + logistic regression, fitted
on the same training split) are rows under the frontier in frontier.md and horizontal lines in the plot,
so the table says at a glance whether the search beat a linear model.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

from embbert_jax import memory
from embbert_jax.files import write_text_atomic

METRICS = ("accuracy", "mcc", "macro_f1")
_STATUS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
           "WAITING": "waiting"}
TRAIN_PREFIX = "train."


def is_repeat_knob(knob: str) -> bool:
  """Whether a train_grid field only repeats a setting (a seed) rather than tuning it."""
  last = knob.rsplit(".", 1)[-1]
  return last == "seed" or last.endswith("_seed")


def shape_of(attrs: dict[str, Any]) -> str:
  """The model-config hash of a ledger trial's user attrs (trials from before train grids: their hash)."""
  return attrs.get("shape") or attrs.get("hash", "")


def setting_label(train: dict[str, Any]) -> str:
  """The tuning knobs of a member trial, e.g. 'learning_rate=0.003' ('' without any)."""
  return ", ".join(f"{k}={v}" for k, v in sorted(train.items()) if not is_repeat_knob(k))


def setting_key(attrs: dict[str, Any]) -> str:
  """Trials with equal keys are repeats of one setting: the same shape and tuning knobs."""
  return f"{shape_of(attrs)}|{setting_label(attrs.get('train') or {})}"


# A trial's wall time in its trainer calls, split as the trainer measures it (loop.fit's timing, plus the
# initial params); worker._time_spent sums them over a trial's calls into its `time_spent` attribute.
TIME_PARTS = ("compile_s", "init_s", "train_s", "eval_s", "checkpoint_s")


def trial_row(t, policy: str) -> dict[str, Any]:
  """A ledger trial (optuna FrozenTrial) as one flat dict: the columns of trials.csv."""
  a = t.user_attrs
  row: dict[str, Any] = {
      "trial": t.number, "status": _STATUS.get(t.state.name, t.state.name.lower()),
      "family": a.get("family", ""), "config": a.get("describe", ""), "hash": a.get("hash", ""),
      "shape": shape_of(a), "setting": setting_label(a.get("train") or {}),
      # The encoder it started from (engine.resolve_init; "" for trials from before --init).
      "init": (a.get("init") or {}).get("kind", ""), "init_from": (a.get("init") or {}).get("path", ""),
      "init_steps": (a.get("init") or {}).get("steps"),
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
  for k in ("best_step", "steps", "train_time_s", "steps_per_s", "tokens_per_s", "seq_len", "group_size",
            "pruned_at", "error", "peak_rss_mb"):
    row[k] = a.get(k)
  row["widths"] = " ".join(map(str, a["widths"])) if a.get("widths") else None  # batch widths of its last call
  for k, v in (a.get("train") or {}).items():
    row[TRAIN_PREFIX + k] = v
  rungs = a.get("rungs") or []
  row["rung"] = rungs[-1][0] if rungs else None  # multi-fidelity sweeps: the highest rung it reported
  row["final_of"] = a.get("final_of")
  spent = a.get("time_spent") or {}
  for k in TIME_PARTS + ("wall_s",):
    row[f"time_{k}"] = spent.get(k)
  row["finished_at"] = t.datetime_complete.timestamp() if t.datetime_complete else None
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


_MEANS = ("value", *(f"{split}_{m}" for split in ("validation", "test") for m in METRICS), "train_time_s")


def setting_point(members: list[dict]) -> dict | None:
  """The point of one setting's member rows (see the module docstring), or None if it has none.

  A lone complete trial is its own point (the row itself); repeats give a row of means with `members`
  (their trial numbers), `repeats` and `value_std`.

  The final seeds of a multi-fidelity sweep (rows with `final_of`) are the exception to "a failed member
  voids its setting": their config already won its band at the top rung, and a seed that failed (a crash,
  a worker killed too often, a NaN) would take the band's only point off the frontier. The point is then
  the mean over the seeds that succeeded, and `failed_seeds` names the others (the table says so).
  """
  failed = []
  if any(r.get("final_of") is not None for r in members):
    failed = [r["trial"] for r in members if r["status"] == "failed"]
    members = [r for r in members if r["status"] != "failed"]
  if any(r["status"] in ("failed", "pruned") for r in members):
    return None
  done = [r for r in members if r["status"] == "complete" and r["value"] is not None
          and r["memory_bytes"] is not None]
  if not done or (len(done) == 1 and not failed):
    return done[0] if done else None
  point = {**done[0], "members": [r["trial"] for r in done], "repeats": len(done)}
  for k in _MEANS:
    got = [r[k] for r in done if r.get(k) is not None]
    point[k] = sum(got) / len(got) if got else None
  point["value_std"] = (math.sqrt(sum((r["value"] - point["value"]) ** 2 for r in done) / (len(done) - 1))
                        if len(done) > 1 else None)
  if failed:
    point["failed_seeds"] = failed
  return point


def shape_points(rows: list[dict]) -> list[dict]:
  """One point per shape that has one: its best setting (module docstring), in first-trial order."""
  settings: dict[str, list[dict]] = {}
  for r in rows:
    settings.setdefault(f"{r.get('shape') or r['hash']}|{r.get('setting', '')}", []).append(r)
  best: dict[str, dict] = {}
  for members in settings.values():
    point = setting_point(members)
    shape = members[0].get("shape") or members[0]["hash"]
    if point is not None and (shape not in best or point["value"] > best[shape]["value"]):
      best[shape] = point
  return list(best.values())


def frontier_rows(rows: list[dict]) -> list[dict]:
  """The points on the frontier, by memory (a trial's row, or a setting's mean row with `members`)."""
  points = shape_points(rows)
  return [points[i] for i in pareto_front([(r["memory_bytes"], r["value"]) for r in points])]


def members_of(point: dict) -> list[int]:
  return point.get("members") or [point["trial"]]


def counts(rows: list[dict]) -> dict[str, int]:
  out: dict[str, int] = {}
  for r in rows:
    out[r["status"]] = out.get(r["status"], 0) + 1
  return out


def _fmt(v, digits=4) -> str:
  return "-" if v is None else f"{v:.{digits}f}"


def references(settings: dict[str, Any]) -> dict[str, Any] | None:
  """The reference baselines of the sweep's task (baselines.for_task, cached), or None without a task.
  A task that cannot be loaded here gives a note instead: the table is still written."""
  if not settings.get("task"):
    return None
  from embbert_jax import baselines, data
  try:
    return baselines.for_task(str(settings["task"]), settings.get("cache_dir") or None)
  except (data.DataError, OSError, ValueError) as e:
    return {"baselines": {}, "note": f"reference baselines unavailable: {str(e).splitlines()[0][:200]}"}


def format_table(rows: list[dict], front: list[dict], settings: dict[str, Any]) -> str:
  """The frontier as a Markdown table (readable on a terminal, pasteable into a README), with the
  reference baselines of the task (references()) as rows below it."""
  metric = settings.get("metric") or (front[0]["metric"] if front else "") or "mcc"
  policy = settings.get("policy", "fp32")
  c = counts(rows)
  grouped = any(r.get("repeats") for r in front)
  head = (f"Pareto frontier of sweep {settings.get('study', '?')}: {len(front)} "
          f"{'configs (seed means at their best setting) from' if grouped else 'of'} {c.get('complete', 0)} "
          f"complete trials ({c.get('pruned', 0)} pruned, {c.get('failed', 0)} failed, "
          f"{c.get('running', 0) + c.get('waiting', 0)} unfinished); validation {metric} vs {policy} memory"
          + (f", budget {memory.format_bytes(settings['budget'])}" if settings.get("budget") else "")
          + init_note(front or rows))
  cols = ["trial", f"{policy} memory", "params", f"val {metric}", f"test {metric}", "test acc", "config",
          "train s"]
  plan = settings.get("plan")
  if plan:
    steps = plan["rung_steps"]
    lower = sum(1 for r in rows if r.get("rung") is not None and r["rung"] < len(steps) - 1)
    head += (f"\n\nMulti-fidelity (asha): rungs at {', '.join(map(str, steps))} steps, eta {plan['eta']}, "
             f"{len(plan['band_edges']) - 1} memory band(s); the frontier holds top-rung trials only (their "
             f"seeds' mean), {lower} config(s) stopped at a lower rung"
             + "".join("; " + why for why in settings.get("rungs_why") or ())
             + ("; dropped for time: " + "; ".join(settings["dropped"]) if settings.get("dropped") else ""))
  lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  for r in front:
    config = r["config"] + (f" [{r['setting']}]" if r.get("setting") else "")
    if r.get("repeats"):
      failed = r.get("failed_seeds") or []
      config += (f" (mean of {r['repeats']} seed{'s' * (r['repeats'] > 1)}"
                 + (f", sd {r['value_std']:.4f}" if r.get("value_std") is not None else "")
                 + (f"; seed trial{'s' * (len(failed) > 1)} {', '.join(map(str, failed))} failed" if failed else "")
                 + ")")
    cells = [",".join(map(str, members_of(r))), memory.format_bytes(r["memory_bytes"]), f"{r['params']:,}",
             _fmt(r["value"]), _fmt(r.get(f"test_{metric}")), _fmt(r.get("test_accuracy")), config,
             "-" if r["train_time_s"] is None else f"{r['train_time_s']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  if not front:
    lines.append("| (no completed trial yet) |" + " |" * (len(cols) - 1))
  ref = references(settings)
  for name, per_split in (ref or {}).get("baselines", {}).items():
    val, test = per_split["validation"], per_split["test"]
    cells = ["reference", "-", "-", _fmt(val.get(metric)), _fmt(test.get(metric)), _fmt(test.get("accuracy")),
             f"{name} (same split)", "-"]
    lines.append("| " + " | ".join(cells) + " |")
  if ref and ref.get("note"):
    lines += ["", ref["note"]]
  lines += ["", time_line(rows, settings)]
  return "\n".join(lines)


def init_note(rows: list[dict]) -> str:
  """'; encoder: ...' for the table's head: the init(s) its trials started from ('' if unrecorded)."""
  seen = dict.fromkeys((r.get("init"), r.get("init_from"), r.get("init_steps")) for r in rows if r.get("init"))
  words = [kind if kind == "scratch" else "token vectors of the corpus (embeddings), the rest random"
           if kind == "embeddings" else f"{steps} pre-training steps in each run" if not path else
           f"{kind} {path} ({steps} pre-training steps)" for kind, path, steps in seen]
  return f"; encoder: {', '.join(words)}" if words else ""


def time_line(rows: list[dict], settings: dict[str, Any]) -> str:
  """Where the sweep's time went: the trainer calls' compile, steps, evaluation, checkpoints and the
  rest of them (data, setup), and with the sweep's start known, its wall time and what no call used."""
  if not any(r.get("time_wall_s") for r in rows):  # a ledger from before time_spent
    spent = sum((r["train_time_s"] or 0) / (r.get("group_size") or 1) for r in rows)
    return f"{len(rows)} trials, {spent / 60:.1f} min of training in all"
  tot = {k: sum(r.get(f"time_{k}") or 0.0 for r in rows) for k in TIME_PARTS + ("wall_s",)}
  calls = tot["wall_s"]
  other = max(calls - sum(v for k, v in tot.items() if k != "wall_s"), 0.0)
  init = f"initial params (mostly their program's compile) {tot['init_s'] / 60:.1f}, " if tot["init_s"] else ""
  text = (f"{len(rows)} trials, {calls / 60:.1f} min in trainer calls: compile {tot['compile_s'] / 60:.1f}, "
          f"{init}steps {tot['train_s'] / 60:.1f}, evaluation {tot['eval_s'] / 60:.1f}, checkpoints "
          f"{tot['checkpoint_s'] / 60:.1f}, data and setup {other / 60:.1f} min")
  started, ends = settings.get("started"), [r["finished_at"] for r in rows if r.get("finished_at")]
  if started and ends:
    workers = max(1, len({r["worker"] for r in rows if r.get("worker")}))
    wall = max(ends) - started
    text += (f"; sweep wall time {wall / 60:.1f} min x {workers} worker(s), of which "
             f"{max(wall * workers - calls, 0.0) / 60:.1f} min outside trainer calls (calibration, "
             "planning, waiting, the ledger)")
  ahead = settings.get("compile_ahead")
  if ahead:  # compile_ahead.CompileAhead: on a thread beside the trainer calls
    text += (f"; compiled ahead on a second thread: {ahead['programs']} programs of {ahead['configs']} "
             f"configs, {ahead['seconds'] / 60:.1f} min, of which the worker waited "
             f"{ahead.get('waited', 0.0) / 60:.1f} (part of the time outside trainer calls)")
  peak = max((r.get("peak_rss_mb") or 0 for r in rows), default=0)
  if peak:  # each worker's high-water mark, recorded with its trials
    text += f"; peak resident memory of a worker {peak / 1024:.2f} GB"
  return text


_CSV_SKIP = ("point", "model")


def reference_lines(settings: dict[str, Any]) -> list[tuple[str, float]]:
  """(name, validation metric) of each reference baseline: the plot's y axis is the validation metric."""
  metric = settings.get("metric") or "mcc"
  ref = references(settings) or {}
  return [(name, per_split["validation"][metric]) for name, per_split in ref.get("baselines", {}).items()
          if metric in per_split["validation"]]


def columns(rows: list[dict]) -> list[str]:
  """The flat columns of the rows, in first-seen order (train.<knob> columns exist only with a grid)."""
  return list(dict.fromkeys(k for r in rows for k in r if k not in _CSV_SKIP))


def write_files(rows: list[dict], front: list[dict], settings: dict[str, Any], out: Path) -> dict[str, Path]:
  """trials.csv, trials.jsonl, frontier.csv, frontier.md and frontier.png in `out`."""
  from embbert_jax import plotting
  out.mkdir(parents=True, exist_ok=True)
  on_front = {n for r in front for n in members_of(r)}
  files = {"trials_csv": out / "trials.csv", "trials_jsonl": out / "trials.jsonl",
           "frontier_csv": out / "frontier.csv", "frontier_md": out / "frontier.md",
           "plot": out / "frontier.png"}
  for key, subset in (("trials_csv", rows), ("frontier_csv", front)):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns(subset or rows) + ["pareto"], extrasaction="ignore")
    w.writeheader()
    for r in subset:
      w.writerow({**r, "pareto": r["trial"] in on_front})
    write_text_atomic(files[key], buf.getvalue())
  write_text_atomic(files["trials_jsonl"], "".join(
      json.dumps({**r, "pareto": r["trial"] in on_front}, default=str) + "\n" for r in rows))
  write_text_atomic(files["frontier_md"], format_table(rows, front, settings) + "\n")
  plotting.frontier_figure(rows, front, files["plot"], budget=settings.get("budget"),
                           min_budget=settings.get("min_budget"), policy=settings.get("policy", "fp32"),
                           metric=settings.get("metric") or "mcc", title=f"sweep {settings.get('study', '')}",
                           references=reference_lines(settings))  # written whole (files.save_figure)
  return files


def log_wandb_summary(rows: list[dict], front: list[dict], files: dict[str, Path], settings: dict[str, Any],
                      mode: str, out: Path) -> str | None:
  """One wandb run per sweep (job_type sweep-summary, grouped with the trials): the trials table, the
  frontier table and the frontier plot. Returns the run's local folder."""
  import wandb
  cols, front_cols = columns(rows), columns(front)
  run = wandb.init(project=settings.get("wandb_project", "embbert_jax"), group=settings.get("study"),
                   name=f"{settings.get('study')}-summary", job_type="sweep-summary", mode=mode,
                   dir=str(out), config={k: v for k, v in settings.items() if not isinstance(v, dict)},
                   reinit="create_new")
  try:
    as_cell = lambda v: v if v is None or isinstance(v, (int, float, str, bool)) else json.dumps(v)
    run.log({"trials": wandb.Table(columns=cols, data=[[as_cell(r.get(c)) for c in cols] for r in rows]),
             "frontier": wandb.Table(columns=front_cols,
                                     data=[[as_cell(r.get(c)) for c in front_cols] for r in front]),
             "frontier_plot": wandb.Image(str(files["plot"]))})
    c = counts(rows)
    run.summary.update({"trials": len(rows), "complete": c.get("complete", 0), "pruned": c.get("pruned", 0),
                        "failed": c.get("failed", 0), "frontier_size": len(front)})
    return run.dir
  finally:
    run.finish()
