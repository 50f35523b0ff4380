"""`python -m embbert_jax.sweep`: the accuracy-vs-memory Pareto frontier of EmbBERT under a memory budget.

    python -m embbert_jax.sweep --budget 2MB                      # 45 min multi-fidelity sweep, one worker
    python -m embbert_jax.sweep --budget 2MB --time-budget 2h     # the same, sized to two hours
    python -m embbert_jax.sweep --budget 2MB --workers auto       # one worker per GPU (CPU: per 4 cores)
    python -m embbert_jax.sweep --budget 2MB --storage postgresql+psycopg2://u:p@host/db --study NAME
    python -m embbert_jax.sweep report runs/sweeps/NAME           # table and plot again, no training

Start the fourth line on as many machines as you like: the workers share the study's trials through the
ledger (ledger.py), no trial runs twice, a killed worker's trial is retried by another, and a relaunch
resumes the sweep. SQLite is for workers on one machine; use PostgreSQL (or any SQLAlchemy URL) for
several. The flags are engine.SETTINGS (declared once there), the setup engine.py, the worker loop
worker.py; this module is the command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from embbert_jax import asha, configs, data, memory
from embbert_jax import ledger as ledger_lib
from embbert_jax import space as space_lib
from embbert_jax.early_stop import hopeless  # noqa: F401  (the sweep's API, importable from here)
from embbert_jax import cli, scheduler, signals
from embbert_jax.engine import (  # noqa: F401
    SETTINGS, STORAGE_ENV, STRATEGIES, Preempted, SweepError, get_config, open_ledger, prepare, say, summarize, wandb_mode)
from embbert_jax.worker import run_sweep
from embbert_jax.propose import DIRECTIONS

INPUT_ERRORS = (SweepError, memory.BudgetError, space_lib.SpaceError, configs.ConfigError, data.DataError,
                ledger_lib.LedgerError, asha.PlanError, ImportError)


def _run_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
      prog="python -m embbert_jax.sweep", formatter_class=cli.HelpFormatter,
      description="Train EmbBERT configurations that fit a memory budget and keep the accuracy-vs-memory "
                  "Pareto frontier. `python -m embbert_jax.sweep report SWEEP` redraws a finished or "
                  "running sweep without training.")
  for s in SETTINGS:  # every setting of the sweep is a flag, declared once in engine.SETTINGS
    kw: dict = {"default": s.default, "help": argparse.SUPPRESS if s.hidden else s.help}
    if isinstance(s.default, bool):
      kw["action"] = argparse.BooleanOptionalAction
    elif isinstance(s.default, int):
      kw["type"] = int
    if s.choices:
      kw["choices"] = list(s.choices)
    if s.name == "budget":
      kw = {**kw, "required": True, "default": None}
    ap.add_argument(s.flag, **kw)
  ap.add_argument("--workers", default="1",
                  help="worker processes here: N or auto (one per GPU; CPU: cores / 4)")
  ap.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # the launcher's children
  return ap


def _settings(args):
  s = get_config()
  for setting in SETTINGS:
    configs.set_field(s, setting.name, getattr(args, setting.name))
  return s


def _count_gpus() -> int:
  if os.environ.get("JAX_PLATFORMS", "").strip() == "cpu" or not shutil.which("nvidia-smi"):
    return 0
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
  except (OSError, subprocess.SubprocessError):
    return 0
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
  return min(n, len([v for v in visible.split(",") if v.strip()])) if visible is not None else n


def _launch(argv: list[str], n: int, sw) -> int:
  """n worker processes of this command: one per GPU (round robin), or disjoint CPU core sets."""
  gpus, cores = _count_gpus(), sorted(os.sched_getaffinity(0))
  per = max(1, len(cores) // n)
  drop = ("--workers", "--storage")  # the ledger URL goes by environment: argv is visible to `ps`
  rest = [a for i, a in enumerate(argv) if a not in drop and (i == 0 or argv[i - 1] not in drop)
          and not a.startswith(("--workers=", "--storage="))]
  pinned = ["--study", sw.settings.study, "--out", str(sw.out)]
  procs = []
  for i in range(n):
    env = {**os.environ, STORAGE_ENV: sw.storage_url, scheduler.WORKERS_ENV: str(n)}
    if gpus:
      env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)  # small models must not each take a whole mesh
      env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    mine = cores[(i * per) % len(cores):][:per] or cores
    cmd = [sys.executable, "-m", "embbert_jax.sweep", *rest, *pinned, "--workers", "1", "--no-summary"]
    procs.append(subprocess.Popen(cmd, env=env, preexec_fn=None if gpus else (
        lambda m=mine: os.sched_setaffinity(0, m))))
  where = f"GPUs {', '.join(str(i % gpus) for i in range(n))}" if gpus else f"{per} CPU cores each"
  say(f"{n} workers started ({where})")

  def forward(signum, _):
    for p in procs:
      p.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  return max(p.wait() for p in procs)


def _print_summary(result: dict, out: Path) -> None:
  print(result["table"])
  files = result["files"]
  print(f"\nfiles: {files['trials_csv']}, {files['trials_jsonl']}, {files['plot']} (folder {out})")
  if not result["finished"]:
    print("(some trials are still running or waiting: other workers are on it, or relaunch to resume)")
  else:  # one split's test set cannot tell a point's lead over the linear model from its luck
    print(f"to check the frontier against TF-IDF + LR on 5 splits: python -m embbert_jax.replicate {out}")


def run_main(argv: list[str]) -> int:
  args = _run_parser().parse_args(argv)
  # One wandb run per trial: its banner would bury the sweep's own lines (WANDB_SILENT=false shows it).
  os.environ.setdefault("WANDB_SILENT", "true")
  settings = _settings(args)
  try:
    n = _workers(args.workers)
    if n > 1:
      sw = prepare(settings)
      led = open_ledger(sw)  # created once here, so that the children do not race to create it
      rc = _launch(argv, n, sw)
      result = summarize(led, sw.out, led.study_attrs().get("settings", {}), wandb_mode(settings.wandb))
      _print_summary(result, sw.out)
      return rc
    with signals.deferred():  # SIGTERM/SIGINT set a flag; training and the worker loop act on it (signals.py)
      result = run_sweep(settings, summary=not args.no_summary)
  except INPUT_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (Preempted, KeyboardInterrupt):
    print("stopped: the running trial(s) are back in the queue; relaunch the same command to resume",
          file=sys.stderr)
    return 130
  if not args.no_summary:
    _print_summary(result, Path(result["files"]["plot"]).parent)
  return 0


def _workers(text: str) -> int:
  if text == "auto":
    return _count_gpus() or max(1, len(os.sched_getaffinity(0)) // 4)
  if not text.isdigit() or int(text) < 1:
    raise SweepError(f"--workers must be a positive number or auto, not {text!r}")
  return int(text)


def report_main(argv: list[str]) -> int:
  ap = argparse.ArgumentParser(prog="python -m embbert_jax.sweep report",
                               description="Redraw a sweep's frontier table, trials.csv/.jsonl and plot from "
                                           "its ledger, without training.")
  ap.add_argument("sweep", help="a sweep folder (with ledger.db) or a study name")
  ap.add_argument("--storage", default="", help="ledger URL (needed for PostgreSQL ledgers)")
  ap.add_argument("--out", default="", help="where to write (default: the sweep folder)")
  ap.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=False,
                  help="also log the summary run to wandb")
  args = ap.parse_args(argv)
  try:
    return _report(args)
  except INPUT_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _report(args) -> int:
  import json
  import optuna
  folder, study = Path(args.sweep), None
  if not folder.is_dir():
    folder, study = Path("runs") / "sweeps" / args.sweep, args.sweep
  meta = folder / "sweep.json"
  if meta.is_file():
    study = study or json.loads(meta.read_text()).get("study")
  url = args.storage or (f"sqlite:///{folder / 'ledger.db'}" if (folder / "ledger.db").is_file() else "")
  if not url:
    raise SweepError(f"no ledger found for {args.sweep!r}: pass a sweep folder holding ledger.db, or "
                     "--storage URL with a study name")
  storage = ledger_lib.open_storage(url)
  names = ledger_lib.retry(optuna.get_all_study_names, storage)
  study = study or (args.sweep if args.sweep in names else (names[0] if len(names) == 1 else None))
  if study not in names:
    raise SweepError(f"study {study or args.sweep!r} is not in {ledger_lib.redact(url)}; studies there: "
                     f"{', '.join(names) or 'none'}")
  led = ledger_lib.Ledger(storage, study, DIRECTIONS)
  settings = {"study": study, **led.study_attrs().get("settings", {})}
  out = Path(args.out) if args.out else (folder if folder.is_dir() else Path("runs") / "sweeps" / study)
  result = summarize(led, out, settings, wandb_mode(True) if args.wandb else None)
  _print_summary(result, out)
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "report":
    return report_main(argv[1:])
  return run_main(argv)


if __name__ == "__main__":
  sys.exit(main())
