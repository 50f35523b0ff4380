"""`python -m embbert_jax.train`: fine-tune a model preset on a task (optionally pre-train first), and the
sweep's default trainer plug-in (engine.Trainer: get_config, train_and_evaluate, train_group,
max_group_size, group_key, Pruned, precompile).

`get_config()` is the fine-tuning recipe of spec section 4 (an ml_collections ConfigDict; `config.model`
is frozen into a configs.ModelConfig where a model is built). The training itself is in loop.py (fit,
train_group, pretrain, run_seeds), the jitted programs in programs.py, the losses and optimiser in
losses.py, logging in runlog.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections

from embbert_jax import batches, cli, configs, data, files, inits, recipes
from embbert_jax.loop import (  # noqa: F401  (the trainer plug-in's API, see engine.Trainer)
    GROUP_KNOBS, Pruned, TrainingDiverged, group_key, max_group_size, pretrain, run_length, run_seeds,
    train_and_evaluate, train_group)
from embbert_jax.precompile import precompile  # noqa: F401  (the plug-in's optional compile-ahead hook)


def get_config(preset: str = "embbert", **model_overrides: Any) -> ml_collections.ConfigDict:
  """The fine-tuning recipe of spec section 4 ("spec", recipes.RECIPES) for a model preset."""
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = configs.get_preset(preset, **model_overrides)
  c.task = "rt_polarity"  # registry name, local file, or hub name (see data.load_task)
  c.seed = 0
  c.batch_size = 32
  c.recipe = "spec"  # the recipe these fields came from (recipes.apply); a record, the fields rule
  c.learning_rate = 5e-5  # AdamW peak learning rate, times the schedule's shape (spec: constant)
  c.schedule = recipes.schedule_config()  # kind, warmup_steps | warmup_fraction, end_fraction
  c.label_smoothing = 0.0
  c.token_lr_scale = 1.0  # the token table's updates times this (0 freezes it, e.g. pre-trained token vectors)
  c.weight_decay = 0.05
  c.grad_clip = 1.0
  c.b1, c.b2, c.eps = 0.9, 0.999, 1e-8
  c.epochs = 10
  c.steps = 0  # > 0 overrides epochs
  c.eval_every = 0  # steps between evaluations; 0 = once per epoch
  c.log_every = 50  # steps between host syncs (loss check, logging)
  c.checkpoint_every = 0  # steps; 0 = at every evaluation
  c.stop_at = 0  # > 0: pause after this step (the schedule still spans the run); rerun with more to resume
  c.patience = 0  # > 0: stop once the best validation metric has not improved for this many evaluations
  c.seq_len = 0  # training/eval length; 0 = auto (longest example rounded up to 32, at most model.max_len)
  c.group_impl = "auto"  # how group members share a program: vmap, map (a loop inside it), auto (per backend)
  c.bucket_window = 64  # length bucketing over windows of this many batches (batches.train_batches); 0 = off
  c.bucket_lengths = batches.BUCKET_LENGTHS  # most batch widths (step compiles) when bucketing; 0 = no limit
  # One more width (one more compile of the step) only where it saves this many forward GFLOP over the run
  # (programs.bucket_ladder); 0 = the least-padding ladder of bucket_lengths widths. 40 is the 2-core CPU's
  # price: a step compile takes 4-8 s there, and a train step 90-170 ms per forward GFLOP (README,
  # Sequence length); an accelerator's GFLOP is far cheaper, so there it buys widths too readily.
  c.bucket_compile_gflop = 40.0
  c.bucket_steps = 0  # the steps the widths are priced over; 0 = the run's (a sweep: a trial's average)
  c.add_cls = True  # prepend [CLS] to single sequences (spec 8.2)
  c.init_from = ""  # a pre-training workdir whose encoder initialises the classifier
  c.token_vectors = False  # token table from the corpus's PPMI-SVD vectors (wordvecs.py; --init embeddings)
  c.label_columns = True  # with token vectors: the table's last columns from a linear model (labelcols.py)
  c.cache_dir = ""  # data/tokenizer cache ("" = default)
  c.corpus = ""  # pre-training/tokenizer corpus file ("" = the offline corpus of data.pretraining_corpus)
  c.pretrain = ml_collections.ConfigDict(dict(
      steps=0,  # MLM + NSP steps before fine-tuning (0 = none)
      learning_rate=1e-3, batch_size=32, mask_rate=0.15, eval_every=0, eval_pairs=2048,
      # peak lr times this shape over pretrain.steps (recipes.schedule_shape; the spec's is constant 2e-4)
      schedule=dict(kind="cosine", warmup_steps=0, warmup_fraction=0.05, end_fraction=0.1),
      max_pairs=300_000,  # training pairs drawn (seeded) and tokenized up front; 0 = every pair of the corpus
      seq_len=128))  # pairs of corpus sentences: 128 holds nearly all; longer ones are truncated
  c.wandb = ml_collections.ConfigDict(dict(mode="auto", project="embbert_jax", group="", name=""))
  return c


def enable_compilation_cache(path: str | os.PathLike | None = None) -> None:
  """Turns on JAX's persistent compilation cache, so a rerun (or a trial of equal shapes in another
  process) loads compiled programs instead of recompiling. Default folder: <data cache>/xla; the env
  var EMBBERT_JAX_COMPILATION_CACHE overrides it ("" or "0" disables it). An explicit `path` wins."""
  if path is None:
    env = os.environ.get("EMBBERT_JAX_COMPILATION_CACHE")
    if env in ("", "0"):
      return
    path = env or data.resolve_cache_dir() / "xla"
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def add_common_flags(ap: argparse.ArgumentParser) -> None:
  ap.add_argument("--preset", default="embbert", help=f"model preset: {', '.join(configs.PRESETS)}")
  ap.add_argument("--task", default=None, help="registry name (rt_polarity, sms_spam), a local "
                  ".jsonl/.csv/.parquet file, or a hub dataset (glue/sst2, ...) (default: rt_polarity)")
  ap.add_argument("--steps", type=cli.at_least(1), default=None, help="total optimisation steps (default: the "
                  "recipe's epochs)")
  ap.add_argument("--workdir", default=None, help="checkpoints, metrics.jsonl, wandb files; reuse to resume "
                  "(default: runs/<kind>-<preset>-<task>-seed<seed>)")
  ap.add_argument("--seed", type=cli.at_least(0), default=None, help="training seed (default: the config's, 0)")
  ap.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"], default=None,
                  help="auto: online with WANDB_API_KEY, else offline")
  ap.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override any config field, e.g. --set model.hidden=96 --set learning_rate=1e-4 "
                       "(--config.model.hidden=96 works too)")


def config_from_args(args, extra: list[str]) -> ml_collections.ConfigDict:
  """The training config of the flags: the preset, the recipe (only where `args` has a `recipe`: see
  recipe_from_args), then --task/--steps/--seed/--pretrain-steps/--init-from, then --set overrides, all
  through configs.set_field."""
  overrides = list(args.set) + [e for e in extra if e.startswith("--config.")]
  unknown = [e for e in extra if not e.startswith("--config.")]
  if unknown:
    raise configs.ConfigError(f"unknown arguments: {' '.join(unknown)}")

  def build(recipe: str | None):
    cfg = get_config(args.preset)
    if recipe:
      recipes.apply(cfg, recipe)
    for key in ("task", "steps", "seed", "init_from"):
      if getattr(args, key, None) is not None:
        configs.set_field(cfg, key, getattr(args, key))
    if getattr(args, "text_field", None) or getattr(args, "label_field", None):
      configs.set_field(cfg, "task", data.task_with_fields(cfg.task, args.text_field, args.label_field))
    if getattr(args, "pretrain_steps", None) is not None:
      configs.set_field(cfg, "pretrain.steps", args.pretrain_steps)
    if args.wandb:
      configs.set_field(cfg, "wandb.mode", args.wandb)
    configs.apply_overrides(cfg, overrides)
    return cfg

  cfg = build(None)
  if getattr(args, "recipe", None):
    cfg = build(recipe_from_args(args.recipe, cfg))
  configs.validate_training(cfg)
  return cfg


def checked_config(args, extra: list[str]) -> ml_collections.ConfigDict:
  """config_from_args, and the task loaded once (a missing file, a bad row, one class), so that bad input
  fails in one line before anything (pre-)trains; exits 2 otherwise."""
  try:
    cfg = config_from_args(args, extra)
    data.load_task(cfg.task, cache_dir=cfg.cache_dir or None)
  except (configs.ConfigError, data.DataError, ValueError) as e:
    cli.bad_input(e)
  return cfg


def apply_recipe(cfg, name: str = recipes.AUTO) -> ml_collections.ConfigDict:
  """The sweep's hook (engine.trainer_config): sets recipe `name` on cfg; auto = scratch from random init,
  the spec's fine-tuning recipe with a pre-trained encoder."""
  return recipes.apply(cfg, recipe_from_args(name, cfg))


def recipe_from_args(name: str, cfg) -> str:
  """--recipe auto: the spec's fine-tuning recipe when a pre-trained encoder is given (--init-from, or
  pre-training steps), else the from-scratch recipe (recipes.choose)."""
  return recipes.choose(name, pretrained=bool(cfg.init_from) or cfg.pretrain.steps > 0)


def default_workdir(cfg, kind: str) -> Path:
  return Path("runs") / f"{kind}-{cfg.preset}-{Path(str(cfg.task)).stem}-seed{cfg.seed}"


def print_results(result: dict, workdir: Path) -> None:
  from rich.console import Console
  from rich.table import Table
  t = Table(title=f"test metrics (best validation {result.get('metric', '')} at step {result.get('best_step')})")
  for col in ("split", *result["test"].keys()):
    t.add_column(col, justify="right")
  for split in ("validation", "test"):
    t.add_row(split, *(f"{v:.4f}" for v in result[split].values()))
  Console().print(t)
  print(f"{result['steps']} steps in {result['train_time_s']:.0f} s ({result['steps_per_s']:.2f} steps/s, "
        f"{result['tokens_per_s']:.0f} tokens/s at length {result['seq_len']}); everything is in {workdir}")


def main(argv: list[str] | None = None) -> None:
  ap = cli.parser("python -m embbert_jax.train",
                  "Fine-tune a model preset on a task (optionally pre-train first).")
  add_common_flags(ap)
  ap.add_argument("--pretrain-steps", type=cli.at_least(0), default=None, help="MLM+NSP steps before fine-tuning")
  ap.add_argument("--init", default=None, metavar="auto|supernet|pretrained|embeddings|scratch|DIR",
                  help="the encoder: auto (default: a shipped or cached supernet holding the config, else a "
                       "shipped pre-trained encoder of exactly this model config and tokenizer, else "
                       "embeddings), supernet (its slice), pretrained (that shipped encoder), embeddings (the "
                       "token table from the corpus's PPMI-SVD token vectors, the rest random), scratch, or DIR (a "
                       "pretrain workdir or model folder, a supernet folder, or a shipped encoder's name); "
                       "printed, and recorded in result.json")
  ap.add_argument("--init-from", default=None, help="alias of --init DIR")
  ap.add_argument("--text-field", default=None, help="a local task file's text field (default: text)")
  ap.add_argument("--label-field", default=None, help="a local task file's label field (default: label)")
  ap.add_argument("--seeds", type=cli.at_least(1), default=1, help="fine-tune this many seeds; report mean and std")
  ap.add_argument("--recipe", default=recipes.AUTO, choices=[recipes.AUTO, *recipes.RECIPES],
                  help="training recipe; auto: 'spec' (the paper's fine-tuning) with a pre-trained encoder "
                       "(--init-from, --pretrain-steps), else 'scratch'. --set overrides its fields")
  args, extra = ap.parse_known_args(argv)
  if args.init and args.init_from:
    cli.bad_input("give the encoder with --init or --init-from, not both")
  init_spec, args.init_from = args.init or args.init_from or "auto", None
  cfg = checked_config(args, extra)
  try:
    init = inits.resolve(cfg, init_spec)
    if init.path:  # a pre-trained encoder: recipe auto then picks the fine-tuning recipe
      args.init_from = init.path
      cfg = config_from_args(args, extra)
    for key, value in configs.init_fields(init.record()).items():
      configs.set_field(cfg, key, value)
  except (configs.ConfigError, data.DataError, ValueError) as e:
    cli.bad_input(e)
  print(init.describe(), flush=True)
  print(recipes.describe(cfg), flush=True)
  if args.distributed:
    jax.distributed.initialize()
  enable_compilation_cache()
  workdir = Path(args.workdir) if args.workdir else default_workdir(cfg, "train")
  try:
    out = run_seeds(cfg, workdir, args.seeds)
  except (data.DataError, TrainingDiverged, ValueError, RuntimeError) as e:
    cli.failure(e)
  for r in out["runs"]:
    print_results(r, Path(r["workdir"]))
  for f in out["failed"]:
    print(f"a seed {f['status']}: {f['error']}", file=sys.stderr)
  if args.seeds > 1:
    print("mean +- std over seeds: " + ", ".join(f"{k} {m:.4f} +- {s:.4f}" for k, (m, s) in out["summary"].items()
                                                 if k.startswith("test/")))
  record_init(init, out["runs"])
  add_baselines(cfg, out["runs"])


def _add_to_results(runs: list[dict], key: str, value) -> None:
  """Sets `key` on each run's record and in its result.json (runs without a workdir: the record only)."""
  for r in runs:
    r[key] = value
    path = Path(r["workdir"]) / "result.json" if r.get("workdir") else None
    if path is not None and path.is_file():
      files.write_json_atomic(path, {**json.loads(path.read_text()), key: value})


def record_init(init, runs: list[dict]) -> None:
  """Adds {"init": {kind, path, steps}} to each run's result.json."""
  _add_to_results(runs, "init", init.record())


def add_baselines(cfg, runs: list[dict]) -> None:
  """Prints the reference baselines of cfg.task (baselines.for_task: majority class, TF-IDF + logistic
  regression on the same split) and adds them to each run's result.json."""
  from embbert_jax import baselines
  ref = baselines.for_task(str(cfg.task), cfg.cache_dir or None)
  print("\n".join(baselines.format_lines(ref)))
  _add_to_results(runs, "baselines", ref)


if __name__ == "__main__":
  main()
