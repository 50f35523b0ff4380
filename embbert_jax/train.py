"""Training: one jitted train step for every architecture, fine-tuning, MLM+NSP pre-training, resume.

`train_and_evaluate(config, workdir)` fine-tunes a classifier (optionally after pre-training or from a
saved encoder) and returns validation/test metrics of the best evaluation; `pretrain(config, workdir)`
runs MLM + NSP and saves the encoder. Both go through `fit`, the single loop:

* the step is a pure `train_step(state, batch, rng) -> (state, metrics)`, jitted whole with the batch
  sharded over a 1-D `('data',)` mesh and the state replicated (runs unchanged on 1 CPU, 8 fake CPU
  devices, a GPU, or several hosts after `jax.distributed.initialize`), the state donated;
* the state is a plain dict {step, params, opt_state, best}; dropout keys are `fold_in(seed, step)` and
  the batch order a function of (seed, epoch), so a run resumed from an orbax checkpoint replays exactly
  what an uninterrupted run does;
* a non-finite loss stops the run with `TrainingDiverged` before anything after the last good
  checkpoint is written;
* metrics go to `metrics.jsonl` in the workdir, to wandb (offline unless an API key is set), and to a
  tqdm bar with steps/s and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from embbert_jax import batches as batch_lib
from embbert_jax import configs, data, memory, metrics, models
from embbert_jax import tokenizer as tok_lib


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


class Pruned(Exception):
  """Raised by a `report` callback to stop a hopeless run early (the sweep's pruner)."""


def get_config(preset: str = "embbert", **model_overrides: Any) -> ml_collections.ConfigDict:
  """The fine-tuning recipe of spec section 4 for a model preset."""
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = configs.get_preset(preset, **model_overrides)
  c.task = "rt_polarity"  # registry name, local file, or hub name (see data.load_task)
  c.seed = 0
  c.batch_size = 32
  c.learning_rate = 5e-5  # AdamW, constant (spec: fine-tuning)
  c.weight_decay = 0.05
  c.grad_clip = 1.0
  c.b1, c.b2, c.eps = 0.9, 0.999, 1e-8
  c.epochs = 10
  c.steps = 0  # > 0 overrides epochs
  c.eval_every = 0  # steps between evaluations; 0 = once per epoch
  c.log_every = 50  # steps between host syncs (loss check, logging)
  c.checkpoint_every = 0  # steps; 0 = at every evaluation
  c.seq_len = 0  # training/eval length; 0 = auto (longest example rounded up to 32, at most model.max_len)
  c.add_cls = True  # prepend [CLS] to single sequences (spec 8.2)
  c.init_from = ""  # a pre-training workdir whose encoder initialises the classifier
  c.cache_dir = ""  # data/tokenizer cache ("" = default)
  c.corpus = ""  # pre-training/tokenizer corpus file ("" = the offline corpus of data.pretraining_corpus)
  c.pretrain = ml_collections.ConfigDict(dict(
      steps=0,  # MLM + NSP steps before fine-tuning (0 = none)
      learning_rate=2e-4, batch_size=32, mask_rate=0.15, eval_every=0, eval_pairs=2048,
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


# ------------------------------------------------------------------------------------------- the step


def make_optimizer(cfg, learning_rate: float) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))


def classify_loss(model, params, batch, rng, is_regression: bool):
  logits = model.apply({"params": params}, batch["ids"], train=True, rngs={"dropout": rng})
  if is_regression:
    loss = jnp.mean(jnp.square(logits[:, 0] - batch["labels"]))
    return loss, {"loss": loss}
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
  acc = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
  return loss, {"loss": loss, "accuracy": acc}


def pretrain_loss(model, params, batch, rng, vocab_size: int, mask_rate: float):
  k_mask, k_drop = jax.random.split(rng)
  inputs, positions, targets, weights = batch_lib.mask_tokens(k_mask, batch["ids"], vocab_size, mask_rate)
  mlm_logits, nsp_logits = model.apply({"params": params}, inputs, train=True, rngs={"dropout": k_drop},
                                       positions_BxP=positions)
  per_tok = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, targets)
  n = jnp.maximum(weights.sum(), 1.0)
  mlm = (per_tok * weights).sum() / n
  nsp = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, batch["labels"]).mean()
  mlm_acc = ((jnp.argmax(mlm_logits, -1) == targets) * weights).sum() / n
  nsp_acc = jnp.mean(jnp.argmax(nsp_logits, -1) == batch["labels"])
  return mlm + nsp, {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "mlm_accuracy": mlm_acc,
                     "nsp_accuracy": nsp_acc}


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
  """A pure step: (state, batch, rng) -> (state, metrics), with grad and update norms logged."""
  def train_step(state, batch, rng):
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    aux = {**aux, "grad_norm": optax.tree.norm(grads), "update_norm": optax.tree.norm(updates)}
    return {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}, aux
  return train_step


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


# ------------------------------------------------------------------------------------------- logging


class Logger:
  """metrics.jsonl in the workdir plus an optional wandb run that resumes with the workdir."""

  def __init__(self, workdir: Path, cfg, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():  # drop rows a killed run wrote after its last checkpoint
      rows = [l for l in self.path.read_text().splitlines() if l and json.loads(l)["step"] <= resume_step]
      self.path.write_text("".join(r + "\n" for r in rows))
    self.run = _wandb_run(workdir, cfg)

  def log(self, step: int, values: dict[str, Any]) -> None:
    row = {"step": int(step), **{k: _py(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
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
  id_file.write_text(run_id)
  return wandb.init(project=cfg.wandb.project, group=cfg.wandb.group or None, name=cfg.wandb.name or None,
                    config=cfg.to_dict(), dir=str(workdir), id=run_id, resume="allow", mode=mode,
                    reinit="create_new")


# ------------------------------------------------------------------------------------------ the loop


def fit(*, loss_fn, optimizer, train_arrays: batch_lib.Arrays, total_steps: int, eval_every: int,
        evaluate: Callable[[Any], dict], select: str | None, workdir: Path, cfg, batch_size: int,
        init_params: Any, report: Callable | None = None, log_every: int = 50,
        checkpoint_every: int = 0, desc: str = "train") -> dict:
  """Trains `total_steps` steps, evaluating every `eval_every`; keeps the params of the best `select`.

  Resumes from the latest checkpoint in `workdir/checkpoints`. Returns {"state", "best", "history"}.
  """
  from tqdm.auto import tqdm

  mesh = make_mesh()
  if batch_size % mesh.size:
    raise ValueError(f"batch size {batch_size} is not divisible by the {mesh.size} devices")
  repl, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  eval_keys = sorted(evaluate(None)) if select else []  # evaluate(None) names the metrics it returns

  def init_state(params):
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params),
            "best": {"score": jnp.full((), -jnp.inf), "step": jnp.zeros((), jnp.int32),
                     "params": jax.tree.map(jnp.copy, params),
                     "metrics": {k: jnp.zeros(()) for k in eval_keys}}}

  state = jax.jit(init_state, out_shardings=repl)(init_params)
  ckpt_every = checkpoint_every or eval_every
  mgr = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(
      max_to_keep=2, create=True))
  start = 0
  if mgr.latest_step() is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    try:
      state = mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # a corrupt or incompatible checkpoint must not be silently overwritten
      raise RuntimeError(f"cannot resume from {workdir / 'checkpoints'} (step {mgr.latest_step()}): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}; use a fresh --workdir") from None
    start = int(state["step"])
    print(f"resuming {desc} from step {start} ({workdir / 'checkpoints'})", file=sys.stderr)
  logger = Logger(workdir, cfg, start)

  step_fn = jax.jit(make_train_step(loss_fn, optimizer), in_shardings=(repl, shard, repl),
                    out_shardings=(repl, repl), donate_argnums=0)
  base_key = jax.random.key(cfg.seed)
  pending: list[tuple[int, dict]] = []
  tokens, t_last, t0 = 0, time.perf_counter(), time.perf_counter()
  bar = tqdm(total=total_steps, initial=start, desc=desc, unit="step", dynamic_ncols=True,
             disable=None if sys.stderr.isatty() else True)

  def flush(step):
    """Host sync: checks the pending losses for NaN, logs their mean."""
    nonlocal tokens, t_last
    if not pending:
      return
    host = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, host):
      if not math.isfinite(float(m["loss"])):
        raise TrainingDiverged(f"loss is {float(m['loss'])} at step {s + 1}; the last good checkpoint "
                               f"is step {mgr.latest_step()} in {workdir / 'checkpoints'}")
    now = time.perf_counter()
    rate = len(pending) / max(now - t_last, 1e-9)
    mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    mean.update(steps_per_s=rate, tokens_per_s=tokens / max(now - t_last, 1e-9))
    logger.log(step, {f"train/{k}": v for k, v in mean.items()})
    bar.set_postfix(loss=f"{mean['loss']:.4f}", steps_s=f"{rate:.1f}", tok_s=f"{mean['tokens_per_s']:.0f}")
    pending.clear()
    tokens, t_last = 0, now

  try:
    batches = batch_lib.train_batches(train_arrays, batch_size, cfg.seed, start)
    for step, batch in batches:
      if step >= total_steps:
        break
      tokens += int((batch["ids"] != 0).sum())
      state, m = step_fn(state, batch, jax.random.fold_in(base_key, step))
      pending.append((step, m))
      bar.update(1)
      done = step + 1
      if done % log_every == 0 or done % eval_every == 0 or done == total_steps:
        flush(done)
      if done % eval_every == 0 or done == total_steps:
        state = _evaluate_and_keep_best(state, evaluate, select, done, logger, report, repl)
      if done % ckpt_every == 0 or done == total_steps:
        mgr.save(done, args=ocp.args.StandardSave(state))
    mgr.wait_until_finished()
  finally:
    bar.close()
    mgr.close()
  elapsed = time.perf_counter() - t0
  return {"state": state, "logger": logger, "elapsed_s": elapsed, "resumed_from": start}


def _evaluate_and_keep_best(state, evaluate, select, step, logger, report, sharding):
  """Logs an evaluation; with `select`, keeps params and metrics of the best validation score."""
  result = evaluate(state["params"])
  logger.log(step, _eval_flat(result))
  if select is None:
    return state
  score = result["validation"][select]
  if score > float(state["best"]["score"]):  # strictly better: ties keep the earlier evaluation
    # A copy: the step donates state["params"], and one buffer must not be donated twice.
    best = {"score": score, "step": step, "params": jax.tree.map(jnp.copy, state["params"]),
            "metrics": _eval_flat(result)}
    best = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), best, state["best"])
    state = {**state, "best": jax.device_put(best, sharding)}
  if report is not None:
    report(step, result["validation"])
  return state


def _eval_flat(result: dict) -> dict:
  return {f"{split}/{k}": v for split, ms in result.items() for k, v in ms.items()}


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for k, v in flat.items():
    split, name = k.split("/", 1)
    out.setdefault(split, {})[name] = float(v)
  return out


# -------------------------------------------------------------------------------------- the commands


def prepare_task(cfg):
  """(task, tokenizer, encoded splits at cfg.seq_len or the auto length)."""
  cache = cfg.cache_dir or None
  task = data.load_task(cfg.task, cache_dir=cache)
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus or None, cache_dir=cache)
  enc = batch_lib.encode_task(task, tok, cfg.model.max_len, cfg.add_cls)
  seq_len = cfg.seq_len or batch_lib.auto_seq_len(enc["train"].ids, cfg.model.max_len)
  return task, tok, batch_lib.trim(enc, seq_len)


def _prepare_workdir(cfg, workdir) -> Path:
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  cfg_file = wd / "config.json"
  if cfg_file.exists():
    saved = json.loads(cfg_file.read_text())
    if saved != json.loads(cfg.to_json()):
      raise ValueError(f"{wd} holds a run with a different config; use another --workdir to start afresh")
  else:
    cfg_file.write_text(cfg.to_json(indent=2))
  return wd


def train_and_evaluate(cfg, workdir, report: Callable | None = None) -> dict:
  """Fine-tunes a classifier on cfg.task; returns metrics of the best validation evaluation."""
  cfg = cfg.copy_and_resolve_references()  # num_labels follows the task; the caller's config stays
  configs.validate(cfg.model)
  workdir = Path(workdir)
  if cfg.pretrain.steps > 0 and not cfg.init_from:
    pretrain(cfg, workdir / "pretrain")
  task, tok, enc = prepare_task(cfg)
  if task.num_labels != cfg.model.num_labels:
    with cfg.model.unlocked():
      cfg.model.num_labels = task.num_labels
  wd = _prepare_workdir(cfg, workdir / "finetune")
  model = models.build_model(cfg.model)
  params = models.init_params(cfg.model, jax.random.key(cfg.seed))
  init_from = cfg.init_from or (str(workdir / "pretrain") if cfg.pretrain.steps > 0 else "")
  if init_from:
    params = {**params, "encoder": load_encoder(init_from, cfg.model)}
  per_epoch = len(enc["train"]) // cfg.batch_size
  total = cfg.steps or cfg.epochs * per_epoch
  eval_every = cfg.eval_every or per_epoch
  select = task.metric
  eval_fn = _make_classify_eval(model, cfg, enc, task.is_regression)
  t0 = time.perf_counter()
  out = fit(optimizer=make_optimizer(cfg, cfg.learning_rate), train_arrays=enc["train"],
            loss_fn=lambda p, b, r: classify_loss(model, p, b, r, task.is_regression), total_steps=total,
            eval_every=min(eval_every, total), evaluate=eval_fn, select=select, workdir=wd, cfg=cfg,
            batch_size=cfg.batch_size, init_params=params, report=report, log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every, desc=f"finetune {cfg.preset}")
  state = out["state"]
  best = jax.device_get(state["best"])
  result = {**_unflatten(best["metrics"]), "metric": select, "best_step": int(best["step"]), "steps": total,
            "train_time_s": time.perf_counter() - t0, "seq_len": int(enc["train"].ids.shape[1]),
            "num_params": memory.num_params(cfg.model), "workdir": str(wd)}
  steps_run = total - out["resumed_from"]
  result["steps_per_s"] = steps_run / max(out["elapsed_s"], 1e-9)
  result["tokens_per_s"] = result["steps_per_s"] * cfg.batch_size * result["seq_len"]
  save_params(wd / "model", best["params"], cfg.model, tok.model_path)
  (wd / "result.json").write_text(json.dumps(result, indent=2))
  out["logger"].close({"best": result})
  return result


def _make_classify_eval(model, cfg, enc, is_regression):
  apply = jax.jit(lambda p, ids: model.apply({"params": p}, ids))
  names = (["spearman", "pearson", "mse"] if is_regression else ["accuracy", "mcc", "macro_f1"])

  def evaluate(params):
    if params is None:
      return [f"{s}/{n}" for s in ("validation", "test") for n in names]
    out = {}
    for split in ("validation", "test"):
      arr = enc[split]
      logits = [np.asarray(apply(params, b["ids"]))[b["weights"] > 0]
                for b in batch_lib.eval_batches(arr, cfg.batch_size)]
      out[split] = metrics.task_metrics(arr.labels, np.concatenate(logits), is_regression)
    return out
  return evaluate


def pretrain(cfg, workdir) -> dict:
  """MLM + NSP on the offline corpus (spec 4); saves the model (encoder + heads) to workdir/model."""
  pc = cfg.pretrain
  cache = cfg.cache_dir or None
  wd = _prepare_workdir(cfg, workdir)
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus or None, cache_dir=cache)
  docs = data.read_documents(cfg.corpus) if cfg.corpus else data.pretraining_documents(cache)
  arrays = batch_lib.pretraining_arrays(docs, tok, min(pc.seq_len or cfg.model.max_len, cfg.model.max_len),
                                        cfg.seed)
  seq_len = min(pc.seq_len or cfg.model.max_len, cfg.model.max_len)
  order = np.random.default_rng(cfg.seed + 1).permutation(len(arrays))
  held, train_idx = order[:pc.eval_pairs], order[pc.eval_pairs:]
  train_arr = batch_lib.Arrays(arrays.ids[train_idx, :seq_len], arrays.labels[train_idx])
  eval_arr = batch_lib.Arrays(arrays.ids[held, :seq_len], arrays.labels[held])
  model = models.build_model(cfg.model, "pretrain")
  params = models.init_params(cfg.model, jax.random.key(cfg.seed), "pretrain")
  loss = lambda p, b, r: pretrain_loss(model, p, b, r, cfg.model.vocab_size, pc.mask_rate)
  eval_loss = jax.jit(lambda p, b, r: pretrain_loss(model, p, b, r, cfg.model.vocab_size, pc.mask_rate)[1])

  def evaluate(params):
    if params is None:
      return ["validation/mlm_loss"]
    rows = [jax.device_get(eval_loss(params, b, jax.random.key(i)))
            for i, b in enumerate(batch_lib.eval_batches(eval_arr, pc.batch_size)) if b["weights"].all()]
    return {"validation": {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}

  eval_every = pc.eval_every or max(pc.steps // 5, 1)
  out = fit(optimizer=make_optimizer(cfg, pc.learning_rate), train_arrays=train_arr,
            loss_fn=loss, total_steps=pc.steps, eval_every=eval_every, evaluate=evaluate, select=None,
            workdir=wd, cfg=cfg, batch_size=pc.batch_size, init_params=params, log_every=cfg.log_every,
            desc=f"pretrain {cfg.preset}")
  final = jax.device_get(out["state"]["params"])
  result = {**evaluate(final), "steps": pc.steps, "train_time_s": out["elapsed_s"], "seq_len": seq_len}
  out["logger"].log(pc.steps, _eval_flat({k: v for k, v in result.items() if k == "validation"}))
  save_params(wd / "model", final, cfg.model, tok.model_path)
  (wd / "result.json").write_text(json.dumps(result, indent=2))
  out["logger"].close({"pretrain": result})
  return result


def save_params(path: Path, params, model_cfg, tokenizer_path) -> None:
  """The deployable model: float params + config + tokenizer (export.save_model's format)."""
  from embbert_jax import export
  export.save_model(path, params, model_cfg, tokenizer_path=tokenizer_path)


def load_encoder(path: str, model_cfg):
  """Encoder params of a saved model (a pre-training workdir or its model/ folder), shape-checked."""
  from embbert_jax import export
  p = Path(path)
  folder = p / "model" if (p / "model").exists() else p
  params, saved_cfg, _ = export.load_model(folder)
  expected = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0)))["encoder"]
  got = jax.tree.map(lambda x: (tuple(x.shape)), params["encoder"])
  want = jax.tree.map(lambda x: (tuple(x.shape)), expected)
  if got != want:
    raise ValueError(f"the encoder in {folder} ({saved_cfg.arch}, d={saved_cfg.hidden}) does not match "
                     f"the model config ({model_cfg.arch}, d={model_cfg.hidden})")
  return jax.tree.map(jnp.asarray, params["encoder"])


# --------------------------------------------------------------------------------------------- the CLI


def run_seeds(cfg, workdir: Path, seeds: int) -> dict:
  """Fine-tunes with seeds cfg.seed .. cfg.seed + seeds - 1; returns per-seed results and mean/std."""
  runs = []
  for i in range(seeds):
    c = cfg.copy_and_resolve_references()
    c.seed = cfg.seed + i
    if c.wandb.name:
      c.wandb.name = f"{cfg.wandb.name}-seed{c.seed}"
    runs.append(train_and_evaluate(c, workdir / f"seed_{c.seed}" if seeds > 1 else workdir))
  summary = {}
  for split in ("validation", "test"):
    for k in runs[0][split]:
      vals = np.array([r[split][k] for r in runs])
      summary[f"{split}/{k}"] = (float(vals.mean()), float(vals.std()))
  return {"runs": runs, "summary": summary}


def add_common_flags(ap: argparse.ArgumentParser) -> None:
  ap.add_argument("--preset", default="embbert", help=f"model preset: {', '.join(configs.PRESETS)}")
  ap.add_argument("--task", default=None, help="registry name (rt_polarity, sms_spam), a local "
                  ".jsonl/.csv/.parquet file, or a hub dataset (glue/sst2, ...)")
  ap.add_argument("--steps", type=int, default=None, help="total optimisation steps (overrides epochs)")
  ap.add_argument("--workdir", default=None, help="checkpoints, metrics.jsonl, wandb files; reuse to resume")
  ap.add_argument("--seed", type=int, default=None)
  ap.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"], default=None,
                  help="auto: online with WANDB_API_KEY, else offline")
  ap.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override any config field, e.g. --set model.hidden=96 --set learning_rate=1e-4 "
                       "(--config.model.hidden=96 works too)")


def config_from_args(args, extra: list[str]) -> ml_collections.ConfigDict:
  cfg = get_config(args.preset)
  for name, key in (("task", "task"), ("steps", "steps"), ("seed", "seed")):
    if getattr(args, name, None) is not None:
      cfg[key] = getattr(args, name)
  if args.wandb:
    cfg.wandb.mode = args.wandb
  overrides = list(args.set) + [e for e in extra if e.startswith("--config.")]
  unknown = [e for e in extra if not e.startswith("--config.")]
  if unknown:
    raise configs.ConfigError(f"unknown arguments: {' '.join(unknown)}")
  configs.apply_overrides(cfg, overrides)
  configs.validate(cfg.model)
  return cfg


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
  ap = argparse.ArgumentParser(prog="python -m embbert_jax.train",
                               description="Fine-tune a model preset on a task (optionally pre-train first).")
  add_common_flags(ap)
  ap.add_argument("--pretrain-steps", type=int, default=None, help="MLM+NSP steps before fine-tuning")
  ap.add_argument("--init-from", default=None, help="a pre-training workdir (or saved model) to start from")
  ap.add_argument("--seeds", type=int, default=1, help="fine-tune this many seeds; report mean and std")
  args, extra = ap.parse_known_args(argv)
  try:
    cfg = config_from_args(args, extra)
    if args.pretrain_steps is not None:
      cfg.pretrain.steps = args.pretrain_steps
    if args.init_from:
      cfg.init_from = args.init_from
  except (configs.ConfigError, ValueError) as e:
    sys.exit(f"error: {e}")
  if args.distributed:
    jax.distributed.initialize()
  enable_compilation_cache()
  workdir = Path(args.workdir) if args.workdir else default_workdir(cfg, "train")
  try:
    out = run_seeds(cfg, workdir, args.seeds)
  except (data.DataError, TrainingDiverged, ValueError, RuntimeError) as e:
    sys.exit(f"error: {e}")
  for r in out["runs"]:
    print_results(r, Path(r["workdir"]))
  if args.seeds > 1:
    print("mean +- std over seeds: " + ", ".join(f"{k} {m:.4f} +- {s:.4f}" for k, (m, s) in out["summary"].items()
                                                 if k.startswith("test/")))


if __name__ == "__main__":
  main()
