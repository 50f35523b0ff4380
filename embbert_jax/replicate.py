"""`python -m embbert_jax.replicate runs/sweep-x`: a sweep's frontier points on other splits of its task,
each next to TF-IDF + logistic regression on the same split, so a user sees whether a point's lead over the
linear model is real or its test set's luck.

A sweep ranks and reports its configs on one split (a few hundred test texts on the small tasks), and
its frontier's gaps to the linear model are inside the split-to-split spread (README, "Is a gap to TF-IDF +
LR real?"). For each frontier point this retrains the point's own trial config (its finetune/config.json:
the same recipe, steps, validation interval, patience and seeds as the sweep's top rung) on split k of the
task for every k of `--splits` (data.load_task's seed: 0 the sweep's split, k > 0 a seeded stratified
split of the pooled examples in the same fractions; a hub task keeps the hub's test split and varies its
validation carve only), written as <out>/split<k>.jsonl with a "split" column.
It fits the reference baselines on each split (baselines.for_task) and reports, per point, the seed means
per split, the mean gap to TF-IDF + LR over splits with its t interval (the splits are the replicates: the
interval holds test-set and seed noise together) and on how many splits the point is above.

Runs already finished under <out> are read back, an interrupted one resumes from its checkpoint, and
replicates.md / replicates.json are rewritten (atomically) after every split, so a killed run loses at
most the training it was in.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import sys
from pathlib import Path

import ml_collections
import numpy as np

from embbert_jax import baselines, cli, configs, data, files, memory, pareto

OUT_NAME = "replicates"


def write_split(task: str, split: int, path: Path, cache_dir: str | None = None) -> data.TaskData:
  """Split `split` of `task` as one .jsonl with a "split" column (atomic; labels as their names)."""
  t = data.load_task(task, cache_dir=cache_dir, seed=split)
  if t.is_pair or t.is_regression:
    raise data.DataError(f"{task}: only single-text classification tasks can be replicated on other splits")
  rows = [json.dumps({"text": text, "label": t.label_names[int(label)], "split": name})
          for name, part in t.splits.items() for text, label in zip(part.text, part.label)]
  files.write_text_atomic(path, "\n".join(rows) + "\n")
  return t


def gap_summary(gaps, level: float = 0.95) -> dict:
  """Mean of per-split gaps, its t interval over splits (NaN with one split) and the splits above 0."""
  from scipy import stats
  gaps = np.asarray(gaps, dtype=float)
  k, mean = len(gaps), float(np.mean(gaps))
  half = float(stats.t.ppf(0.5 + level / 2, k - 1) * gaps.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan
  return dict(mean=mean, low=mean - half, high=mean + half, wins=int((gaps > 0).sum()), splits=k)


def frontier_points(sweep: Path, trials: list[int] | None = None) -> list[dict]:
  """The sweep's frontier rows (frontier.csv, `pareto` True), or the rows of `trials`, each with the
  config of its trial's run (trials/<number>-*/finetune/config.json)."""
  path = sweep / "frontier.csv"
  if not path.is_file():
    raise data.DataError(f"{sweep}: no frontier.csv (not a finished sweep's --out folder)")
  rows = list(csv.DictReader(path.open()))
  pick = [r for r in rows if (int(r["trial"]) in trials if trials else r.get("pareto") == "True")]
  if trials and len(pick) != len(set(trials)):
    missing = sorted(set(trials) - {int(r["trial"]) for r in pick})
    raise data.DataError(f"{path}: no frontier row for trial(s) {missing} (rows: {[r['trial'] for r in rows]})")
  points = []
  for r in pick:
    found = sorted((sweep / "trials").glob(f"{int(r['trial']):04d}-*/finetune/config.json"))
    if not found:
      raise data.DataError(f"{sweep}/trials: no finetune/config.json for trial {r['trial']}")
    run_config = json.loads(found[0].read_text())
    if not all(k in run_config for k in ("model", "task", "seed", "wandb")):
      raise data.DataError(f"{found[0]}: not a config of embbert_jax.train (a sweep with another --trainer "
                           "cannot be replicated here)")
    points.append(dict(trial=int(r["trial"]), memory_bytes=int(float(r["memory_bytes"])), config=r["config"],
                       sweep_acc=float(r.get("test_accuracy") or math.nan), run_config=run_config))
  return points


def seed_runs(cfg: ml_collections.ConfigDict, workdir: Path, seeds: int) -> list[dict]:
  """The seeds' results: read back where every seed finished, else trained (or resumed) by loop.run_seeds."""
  done = [workdir / f"seed_{cfg.seed + i}" / "finetune" / "result.json" for i in range(seeds)]
  if seeds == 1:
    done = [workdir / "finetune" / "result.json"]
  if all(f.is_file() for f in done):
    return [json.loads(f.read_text()) for f in done]
  from embbert_jax import loop
  return loop.run_seeds(cfg, workdir, seeds)["runs"]


def trial_config(run_config: dict, sets: list[str] | tuple = ()) -> ml_collections.ConfigDict:
  """A trial's training config as it ran, then `sets` ("field=value", configs.apply_overrides). A field the
  trial's config predates (a later addition to train.get_config) is added at its default before a --set
  names it; without one it stays absent, so the trial trains as it did."""
  cfg = ml_collections.ConfigDict(run_config)
  if not sets:
    return cfg
  from embbert_jax import train
  defaults = train.get_config()
  for item in sets:
    top = item.partition("=")[0].strip().lstrip("-").split(".")[0]
    if top not in cfg and top in defaults:
      cfg[top] = copy.deepcopy(defaults[top])
  return configs.apply_overrides(cfg, sets)


def replicate_point(point: dict, split: int, split_file: Path, out: Path, seeds: int, sets=()) -> dict:
  """One point on one split: its seeds' test accuracies and the split's references."""
  cfg = trial_config(point["run_config"], sets)
  cfg.task = str(split_file)
  cfg.wandb.mode = "disabled"
  runs = seed_runs(cfg, out / f"trial{point['trial']}" / f"split{split}", seeds)
  refs = baselines.for_task(str(split_file), cfg.cache_dir or None).get("baselines", {})
  test = lambda name: refs.get(name, {}).get("test", {}).get("accuracy", math.nan)
  return dict(split=split, acc=[float(r["test"]["accuracy"]) for r in runs],
              tfidf=test(baselines.TFIDF), majority=test(baselines.MAJORITY))


def summarize(points: list[dict]) -> list[dict]:
  """Per point: accuracy mean and sd over splits (of the seed means), gap_summary of the TF-IDF gaps, and
  whether it is on the frontier of (memory, mean accuracy over splits): the points a user should choose
  among once the splits have spoken, which need not be the sweep's own order."""
  out = []
  for p in points:
    means = [float(np.mean(r["acc"])) for r in p["rows"]]
    gaps = [m - r["tfidf"] for m, r in zip(means, p["rows"])]
    out.append({**{k: p[k] for k in ("trial", "memory_bytes", "config", "sweep_acc")}, "rows": p["rows"],
                "acc_mean": float(np.mean(means)), "acc_sd": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
                "gap": gap_summary(gaps) if gaps else None})
  front = set(pareto.pareto_front([(s["memory_bytes"], s["acc_mean"]) for s in out]))
  return [{**s, "front": i in front} for i, s in enumerate(out)]


def table(summary: list[dict], task: str, seeds: int) -> str:
  pct = lambda x: f"{x * 100:.2f}"
  lines = [f"Frontier points of the sweep on {task}, retrained on each split with their trial's config "
           f"({seeds} seed{'s' * (seeds > 1)} per split; test accuracy, the seeds' mean per split), against "
           "TF-IDF (1-2 grams) + logistic regression fitted on the same split", "",
           "| trial | fp32 memory | config | the sweep's test accuracy | test accuracy per split | mean +- sd "
           "| TF-IDF + LR per split | gap [95 % t over splits] | splits above | on the frontier over splits |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for s in summary:
    rows, g = s["rows"], s["gap"]
    per_split = ", ".join(f"{r['split']}: {pct(float(np.mean(r['acc'])))}" for r in rows)
    tfidf = ", ".join(pct(r["tfidf"]) for r in rows)
    interval = "" if g is None or math.isnan(g["low"]) else f" [{g['low'] * 100:+.2f}, {g['high'] * 100:+.2f}]"
    gap = "-" if g is None else f"{g['mean'] * 100:+.2f}{interval}"
    above = "-" if g is None else f"{g['wins']} of {g['splits']}"
    lines.append(f"| {s['trial']} | {memory.format_bytes(s['memory_bytes'])} | {s['config']} | "
                 f"{pct(s['sweep_acc'])} | {per_split} | "
                 f"{pct(s['acc_mean'])} +- {pct(s['acc_sd'])} | {tfidf} | {gap} | {above} | "
                 f"{'yes' if s['front'] else 'no'} |")
  return "\n".join(lines)


def write_report(out: Path, sweep: Path, task: str, seeds: int, points: list[dict]) -> str:
  summary = summarize(points)
  text = table(summary, task, seeds)
  files.write_text_atomic(out / f"{OUT_NAME}.md", text + "\n")
  files.write_json_atomic(out / f"{OUT_NAME}.json", dict(sweep=str(sweep), task=task, seeds=seeds, points=summary))
  return text


def sweep_task(recorded: str, task: str | None = None) -> str:
  """The task as the trials recorded and loaded it (a local file's fields included), or `task`: the same
  data as this directory reaches it. A sweep records a local file as it was typed, so a relative path
  holds only from the directory the sweep ran in (the same string on every worker is what lets workers on
  several machines share one study)."""
  if task:
    return task
  path = data.local_file(recorded)
  if path is not None and not path.is_absolute() and not path.is_file():
    raise data.DataError(f"the sweep's task {recorded!r} is a path relative to the directory the sweep ran in; "
                         f"run from there or pass --task with the file's path from here")
  return recorded


def run(sweep: Path, splits: list[int], seeds: int, out: Path, trials: list[int] | None = None,
        task: str | None = None, sets: list[str] | tuple = ()) -> list[dict]:
  points = [{**p, "rows": []} for p in frontier_points(sweep, trials)]
  if not points:
    raise data.DataError(f"{sweep}/frontier.csv: no frontier point to replicate")
  recorded = str(points[0]["run_config"]["task"])
  task = sweep_task(recorded, task)
  cache_dir = points[0]["run_config"].get("cache_dir") or None
  for p in points:  # a bad --set: one line before anything is written
    trial_config(p["run_config"], sets)
  out.mkdir(parents=True, exist_ok=True)
  source, want = out / "source.json", {"sweep": str(sweep.resolve()), "task": recorded}
  if sets:
    want["set"] = list(sets)
  if source.is_file() and json.loads(source.read_text()) != want:  # finished runs there are read back unchecked
    raise data.DataError(f"{out} holds replicates of {json.loads(source.read_text())}; use another --out")
  files.write_json_atomic(source, want)
  from embbert_jax.train import enable_compilation_cache
  enable_compilation_cache()
  for k in splits:  # split by split: the report covers every point on the splits done so far
    split_file = out / f"split{k}.jsonl"
    if not split_file.is_file():
      write_split(task, k, split_file, cache_dir)
    for p in points:
      print(f"trial {p['trial']} ({p['config']}) on split {k}", flush=True)
      p["rows"].append(replicate_point(p, k, split_file, out, seeds, sets))
    print(write_report(out, sweep, task, seeds, points), flush=True)
  return summarize(points)


def main(argv: list[str] | None = None) -> None:
  ap = cli.parser("python -m embbert_jax.replicate", "Retrain a sweep's frontier points on other splits of its "
                  "task, each against TF-IDF + logistic regression on the same split.")
  ap.add_argument("sweep", help="a finished sweep's --out folder (frontier.csv, trials/)")
  ap.add_argument("--splits", type=cli.at_least(0), nargs="+", default=[0, 1, 2, 3, 4],
                  help="the split seeds (0: the sweep's split)")
  ap.add_argument("--seeds", type=cli.at_least(1), default=3, help="training seeds per point and split")
  ap.add_argument("--trials", type=cli.at_least(0), nargs="+", default=None,
                  help="these frontier rows' trials (default: every frontier point)")
  ap.add_argument("--out", default=None, help=f"folder for the splits and runs (default: <sweep>/{OUT_NAME})")
  ap.add_argument("--task", default=None, help="the sweep's task as this directory reaches it (default: as the "
                  "sweep recorded it; a relative file path holds only from where the sweep ran)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a field of every trial's training config (e.g. label_columns=false): the "
                       "frontier retrained with one change; give it its own --out")
  a = ap.parse_args(argv)
  sweep = Path(a.sweep)
  out = Path(a.out) if a.out else sweep / OUT_NAME
  if (why := files.unwritable(out, folder=True)):
    cli.bad_input(why)
  try:
    run(sweep, list(dict.fromkeys(a.splits)), a.seeds, out, a.trials, a.task, a.set)
  except (data.DataError, json.JSONDecodeError, KeyError, configs.ConfigError) as e:
    cli.bad_input(e)
  except (RuntimeError, ValueError) as e:
    cli.failure(e)


if __name__ == "__main__":
  main(sys.argv[1:])
