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
import dataclasses
import functools
import json
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
from embbert_jax import configs, data, memory, metrics, models, recipes
from embbert_jax import tokenizer as tok_lib


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


class Pruned(Exception):
  """Raised by a `report` callback to stop a hopeless run early (the sweep's pruner)."""


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
  c.weight_decay = 0.05
  c.grad_clip = 1.0
  c.b1, c.b2, c.eps = 0.9, 0.999, 1e-8
  c.epochs = 10
  c.steps = 0  # > 0 overrides epochs
  c.eval_every = 0  # steps between evaluations; 0 = once per epoch
  c.log_every = 50  # steps between host syncs (loss check, logging)
  c.checkpoint_every = 0  # steps; 0 = at every evaluation
  c.seq_len = 0  # training/eval length; 0 = auto (longest example rounded up to 32, at most model.max_len)
  c.group_impl = "auto"  # how group members share a program: vmap, map (a loop inside it), auto (per backend)
  c.bucket_window = 64  # length bucketing over windows of this many batches (batches.train_batches); 0 = off
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


def make_optimizer(cfg, learning_rate: float | None = None, weight_decay: float | None = None,
                   total_steps: int | None = None) -> optax.GradientTransformation:
  """Clip + AdamW, its hyperparameters held in the optimiser state (`optax.inject_hyperparams`), so the
  members of a group share one update program and each carries its own learning rate and weight decay.

  A non-constant `cfg.schedule` (recipes.schedule_shape over `total_steps`, default cfg.total_steps or
  cfg.steps) scales AdamW's whole update, decay term included: exactly AdamW with learning rate
  peak x shape(step), while the peak stays a per-member value in the state. The constant schedule adds
  nothing, so the spec recipe's optimiser (and its state layout) is unchanged."""
  lr = cfg.learning_rate if learning_rate is None else learning_rate
  wd = cfg.weight_decay if weight_decay is None else weight_decay
  parts = [optax.clip_by_global_norm(cfg.grad_clip),
           optax.inject_hyperparams(optax.adamw)(learning_rate=lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                                 weight_decay=wd)]
  sched = cfg.get("schedule")
  if sched is not None and not recipes.is_constant(sched):
    total = total_steps or cfg.get("total_steps") or cfg.get("steps")
    parts.append(optax.scale_by_schedule(recipes.schedule_shape(sched, int(total or 0))))
  return optax.chain(*parts)


def classify_loss(model, params, batch, rng, is_regression: bool, label_smoothing: float = 0.0):
  logits = model.apply({"params": params}, batch["ids"], train=True, rngs={"dropout": rng})
  if is_regression:
    loss = jnp.mean(jnp.square(logits[:, 0] - batch["labels"]))
    return loss, {"loss": loss}
  if label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(batch["labels"], logits.shape[-1]), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
  else:
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


def _where_members(mask_G, new, old):
  """Per member (leading axis G): `new` where mask_G, else `old`."""
  return jax.tree.map(lambda n, o: jnp.where(mask_G.reshape(mask_G.shape + (1,) * (n.ndim - 1)), n, o),
                      new, old)


def over_members(fn: Callable, impl: str = "auto") -> Callable:
  """fn mapped over a leading member axis of every argument: `jax.vmap` (one batched program: what an
  accelerator wants) or `jax.lax.map` (a loop over members inside one program: on CPU the vmapped
  group step measured slower at every G, benchmarks/grouped_training.py). "auto": map on CPU, vmap
  elsewhere."""
  if impl == "auto":
    impl = "map" if jax.default_backend() == "cpu" else "vmap"
  if impl == "vmap":
    return jax.vmap(fn)
  if impl == "map":
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)
  raise ValueError(f"unknown group_impl {impl!r}: 'auto', 'vmap' or 'map'")


def make_group_step(loss_fn: Callable, optimizer: optax.GradientTransformation, impl: str = "auto"):
  """The step of G members at once: `make_train_step` mapped (over_members) over stacked params,
  optimiser states (each with its own learning rate and weight decay), batches (G, B, L) and dropout keys.

  A member whose loss or gradient is not finite keeps its last finite params and is marked dead
  (`alive` False, `failed_at` = the step); the others go on. Dropout keys are fold_in(key(seed), step)
  per member, computed inside the program: exactly what a one-member run of that seed uses.
  """
  single = make_train_step(loss_fn, optimizer)

  def member(params, opt_state, batch, rng):
    new, aux = single({"step": 0, "params": params, "opt_state": opt_state}, batch, rng)
    return new["params"], new["opt_state"], aux

  def group_step(state, batch_G):
    rngs = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), state["step"]))(state["seed"])
    params, opt_state, aux = over_members(member, impl)(state["params"], state["opt_state"], batch_G, rngs)
    finite = jnp.isfinite(aux["loss"]) & jnp.isfinite(aux["grad_norm"]) & jnp.isfinite(aux["update_norm"])
    ok = state["alive"] & finite
    died = state["alive"] & ~finite
    return {**state, "step": state["step"] + 1,
            "params": _where_members(ok, params, state["params"]),
            "opt_state": _where_members(ok, opt_state, state["opt_state"]),
            "alive": ok, "failed_at": jnp.where(died, state["step"] + 1, state["failed_at"])}, aux
  return group_step


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


@dataclasses.dataclass(frozen=True)
class Programs:
  """The jitted programs of one (model, loss, optimiser) shape, shared by every trial that has it."""
  init: Callable  # (seeds_G, lrs_G, wds_G, params_G, zero metrics_G) -> state
  step: Callable  # (state, batch_G) -> (state, aux_G); the state is donated
  keep_best: Callable  # (state, improved_G, score_G, metrics_G, step) -> state
  apply: Callable  # (params_G, *inputs) -> per-member outputs (the evaluation forward pass)


@functools.lru_cache(maxsize=32)
def _programs(kind: str, model_json: str, opt_json: str, loss_args: tuple, devices: tuple,
              group_impl: str = "auto") -> Programs:
  """Built once per process for each distinct key, so trials of equal shapes (a sweep's, the seeds of
  run_seeds, a resumed run) reuse the traced and compiled programs in memory; across processes the
  persistent compilation cache does the same (enable_compilation_cache)."""
  model_cfg = ml_collections.ConfigDict(json.loads(model_json))
  opt_cfg = ml_collections.ConfigDict(json.loads(opt_json))  # learning rate / weight decay: per member
  model = models.build_model(model_cfg, "pretrain" if kind == "pretrain" else "classify")
  if kind == "pretrain":
    vocab, rate = loss_args
    loss_fn = lambda p, b, r: pretrain_loss(model, p, b, r, vocab, rate)
    apply = jax.jit(lambda p_G, b, r: over_members(lambda p: loss_fn(p, b, r)[1], group_impl)(p_G))
  else:
    is_regression, label_smoothing = loss_args
    loss_fn = lambda p, b, r: classify_loss(model, p, b, r, is_regression, label_smoothing)
    apply = jax.jit(lambda p_G, ids: over_members(lambda p: model.apply({"params": p}, ids), group_impl)(p_G))
  optimizer = make_optimizer(opt_cfg, 0.0, 0.0)  # the update reads each member's values from its state
  mesh = Mesh(np.array(devices), ("data",))
  repl, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))

  def init(seeds_G, lrs_G, wds_G, params_G, metrics_G):
    opt_state = jax.vmap(lambda p, lr, wd: make_optimizer(opt_cfg, lr, wd).init(p))(params_G, lrs_G, wds_G)
    g = seeds_G.shape[0]
    return {"step": jnp.zeros((), jnp.int32), "seed": seeds_G, "params": params_G, "opt_state": opt_state,
            "alive": jnp.ones((g,), bool), "failed_at": jnp.zeros((g,), jnp.int32),
            "best": {"score": jnp.full((g,), -jnp.inf), "step": jnp.zeros((g,), jnp.int32),
                     "params": jax.tree.map(jnp.copy, params_G), "metrics": metrics_G}}

  def keep_best(state, improved_G, score_G, metrics_G, step):
    b = state["best"]
    best = {"score": jnp.where(improved_G, score_G, b["score"]),
            "step": jnp.where(improved_G, step, b["step"]),
            "params": _where_members(improved_G, state["params"], b["params"]),
            "metrics": _where_members(improved_G, metrics_G, b["metrics"])}
    return {**state, "best": best}

  return Programs(
      init=jax.jit(init, out_shardings=repl),
      step=jax.jit(make_group_step(loss_fn, optimizer, group_impl), in_shardings=(repl, shard),
                   out_shardings=(repl, repl), donate_argnums=0),
      keep_best=jax.jit(keep_best, out_shardings=repl, donate_argnums=0), apply=apply)


def programs_for(cfg, kind: str = "classify", is_regression: bool = False, total_steps: int = 0) -> Programs:
  """`total_steps`: the run's length, which a non-constant schedule needs (pre-training: constant)."""
  opt = {k: cfg[k] for k in ("grad_clip", "b1", "b2", "eps")}  # lr and weight decay live in the state
  sched = recipes.schedule_config() if kind == "pretrain" else cfg.get("schedule", recipes.schedule_config())
  if not recipes.is_constant(sched):  # a constant schedule keeps the key (and the program) of before
    opt.update(schedule=sched.to_dict(), total_steps=int(total_steps))
  loss_args = ((cfg.model.vocab_size, cfg.pretrain.mask_rate) if kind == "pretrain"
               else (is_regression, float(cfg.get("label_smoothing", 0.0))))
  return _programs(kind, cfg.model.to_json(), json.dumps(opt), loss_args, tuple(jax.devices()),
                   cfg.get("group_impl", "auto"))


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


@dataclasses.dataclass
class Member:
  """One training of a group: its config (seed, learning rate, weight decay, wandb name) and the folder
  of its metrics.jsonl and wandb run."""
  cfg: Any
  workdir: Path


def fit(*, programs: Programs, members: list[Member], init_params_G: Any, train_arrays: batch_lib.Arrays,
        total_steps: int, eval_every: int, evaluate: Callable[[Any], Any], select: str | None,
        group_dir: Path, batch_size: int, report: Callable | None = None, log_every: int = 50,
        checkpoint_every: int = 0, bucket_window: int = 0, desc: str = "train") -> dict:
  """Trains the G members of a group together for `total_steps` steps, evaluating every `eval_every`.

  `init_params_G` is stacked (leading axis G). `evaluate(params_G)` returns one {split: {metric: value}}
  per member (`evaluate(None)` names the metrics); with `select`, each member keeps the params of its best
  validation `select`. `report(i, step, validation)` may raise Pruned to stop member i. A member whose
  loss is not finite stops as failed; the others go on. Resumes from `group_dir/checkpoints`. Batches
  are assembled and sent to the device by a thread two steps ahead (batches.prefetch); `bucket_window`
  > 0 groups examples of similar length (batches.train_batches).
  Returns {"state", "loggers", "outcomes" ({i: failed/pruned record}), "elapsed_s", "resumed_from"}.
  """
  from tqdm.auto import tqdm

  mesh = make_mesh()
  if batch_size % mesh.size:
    raise ValueError(f"batch size {batch_size} is not divisible by the {mesh.size} devices")
  repl = NamedSharding(mesh, P())
  g = len(members)
  eval_keys = sorted(evaluate(None)) if select else []
  hp = lambda name, dtype: np.array([m.cfg[name] for m in members], dtype)
  state = programs.init(hp("seed", np.int32), hp("learning_rate", np.float32),
                        hp("weight_decay", np.float32), init_params_G,
                        {k: np.zeros(g, np.float32) for k in eval_keys})
  ckpt_dir, outcomes_file = group_dir / "checkpoints", group_dir / "members.json"
  ckpt_every = checkpoint_every or eval_every
  mgr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  start, outcomes = 0, {}
  if mgr.latest_step() is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    try:
      state = mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # a corrupt or incompatible checkpoint must not be silently overwritten
      raise RuntimeError(f"cannot resume from {ckpt_dir} (step {mgr.latest_step()}): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}; use a fresh --workdir") from None
    start = int(state["step"])
    print(f"resuming {desc} from step {start} ({ckpt_dir})", file=sys.stderr)
  alive = np.array(jax.device_get(state["alive"]))  # host copy; flush and pruning keep it current
  if start and outcomes_file.exists():  # outcomes after the checkpoint are replayed, not loaded
    outcomes = {int(i): o for i, o in json.loads(outcomes_file.read_text()).items() if not alive[int(i)]}
  loggers = [Logger(m.workdir, m.cfg, start) for m in members]
  pending: list[tuple[int, dict]] = []
  tokens, t_last, t0 = np.zeros(g), time.perf_counter(), time.perf_counter()
  bar = tqdm(total=total_steps, initial=start, desc=desc + (f" x{g}" if g > 1 else ""), unit="step",
             dynamic_ncols=True, disable=None if sys.stderr.isatty() else True)

  def flush(step):
    """Host sync: records members that died since the last one, logs each live member's mean metrics."""
    nonlocal tokens, t_last
    if not pending:
      return
    host = jax.device_get([m for _, m in pending])
    now_alive, failed_at = (np.asarray(x) for x in jax.device_get((state["alive"], state["failed_at"])))
    now = time.perf_counter()
    dt = max(now - t_last, 1e-9)
    rate = len(pending) / dt
    for i in np.flatnonzero(alive):
      rows = [m for (s, _), m in zip(pending, host) if now_alive[i] or s + 1 < failed_at[i]]
      if not now_alive[i] and int(failed_at[i]):
        bad = next((float(m["loss"][i]) for m in host if not np.isfinite(m["loss"][i])), float("nan"))
        outcomes[int(i)] = {"status": "failed", "error": f"loss is {bad} at step {int(failed_at[i])}; the "
                            f"last good checkpoint is step {mgr.latest_step()} in {ckpt_dir}"}
      if rows:
        mean = {f"train/{k}": float(np.mean([m[k][i] for m in rows])) for k in rows[0]}
        mean.update({"train/steps_per_s": rate, "train/tokens_per_s": tokens[i] / dt})
        loggers[i].log(step, mean)
    alive[:] = now_alive & alive
    live = host[-1]["loss"][alive]
    bar.set_postfix(loss=f"{float(np.mean(live)) if live.size else float('nan'):.4f}", steps_s=f"{rate:.1f}",
                    tok_s=f"{tokens.sum() / dt:.0f}", live=f"{alive.sum()}/{g}")
    pending.clear()
    tokens, t_last = np.zeros(g), now

  def save(step):
    mgr.save(step, args=ocp.args.StandardSave(state))
    outcomes_file.write_text(json.dumps(outcomes, indent=2))

  shard = NamedSharding(mesh, P(None, "data"))
  stream = batch_lib.prefetch(_group_batches(train_arrays, batch_size, members, start, bucket_window),
                              size=2, put=lambda item: batch_lib.to_device(item, shard))
  try:
    for step, batch, batch_tokens in stream:
      if step >= total_steps or not alive.any():
        break
      tokens += np.asarray(batch_tokens)
      state, m = programs.step(state, batch)
      pending.append((step, m))
      bar.update(1)
      done = step + 1
      if done % log_every == 0 or done % eval_every == 0 or done == total_steps:
        flush(done)
      if (done % eval_every == 0 or done == total_steps) and alive.any():
        state = _evaluate_members(state, programs, evaluate, select, eval_keys, done, alive, loggers,
                                  report, outcomes, repl)
      if done % ckpt_every == 0 or done == total_steps or not alive.any():
        save(done)
    mgr.wait_until_finished()
  finally:
    stream.close()
    bar.close()
    mgr.close()
  return {"state": state, "loggers": loggers, "outcomes": outcomes, "elapsed_s": time.perf_counter() - t0,
          "resumed_from": start}


def _group_batches(arrays: batch_lib.Arrays, batch_size: int, members: list[Member], start: int,
                   bucket_window: int = 0):
  """(step, batch (G, B, L), real tokens per member): member i's batch is the one a lone run with its
  seed would see (with bucketing, padded to the longest member's length: outputs do not change)."""
  streams = [batch_lib.train_batches(arrays, batch_size, m.cfg.seed, start, bucket_window) for m in members]
  for parts in zip(*streams):
    batch = batch_lib.stack_batches([b for _, b in parts])
    yield parts[0][0], batch, (batch["ids"] != configs.PAD_ID).sum(axis=(1, 2)).tolist()  # stays on host


def _evaluate_members(state, programs, evaluate, select, eval_keys, step, alive, loggers, report, outcomes,
                      sharding):
  """Logs each live member's evaluation; keeps each one's best; lets `report` prune members."""
  results = evaluate(state["params"])
  for i in np.flatnonzero(alive):
    loggers[i].log(step, _eval_flat(results[i]))
  if select is None:
    return state
  scores = np.array([r["validation"][select] for r in results], np.float32)
  # Strictly better: ties keep the earlier evaluation; a NaN score never wins.
  improved = alive & (scores > np.asarray(jax.device_get(state["best"]["score"])))
  flat = [_eval_flat(r) for r in results]
  metrics_G = {k: np.array([f[k] for f in flat], np.float32) for k in eval_keys}
  state = programs.keep_best(state, improved, scores, metrics_G, np.int32(step))
  if report is None:
    return state
  pruned = np.zeros_like(alive)
  for i in np.flatnonzero(alive):
    try:
      report(int(i), step, results[i]["validation"])
    except Pruned as e:
      pruned[i] = True
      outcomes[int(i)] = {"status": "pruned", "error": str(e), "pruned_at": step}
  if pruned.any():  # the step, checkpoint and a resumed run see them stopped; members.json says why
    alive &= ~pruned
    state = {**state, "alive": jax.device_put(alive.copy(), sharding)}
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


def _prepare_workdir(cfg, workdir, record: dict | None = None) -> Path:
  """Creates the folder and records its config; refuses a folder that holds a run of another config."""
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  cfg_file = wd / "config.json"
  want = record if record is not None else json.loads(cfg.to_json())
  if cfg_file.exists():
    if json.loads(cfg_file.read_text()) != want:
      raise ValueError(f"{wd} holds a run with a different config; use another --workdir to start afresh")
  else:
    cfg_file.write_text(json.dumps(want, indent=2))
  return wd


# Config fields in which the members of one group may differ (everything else, shapes included, is shared).
GROUP_KNOBS = ("seed", "learning_rate", "weight_decay", "init_from", "wandb.name", "wandb.group")


def group_key(cfg) -> str:
  """Equal keys: the trainings can run as one vmapped program (train_group)."""
  flat = configs.flatten_dict(cfg.to_dict())
  return configs.config_hash({k: v for k, v in flat.items() if k not in GROUP_KNOBS})


def train_bytes_per_member(cfg) -> int:
  """A conservative estimate of one member's training memory: params, gradients, AdamW moments, the best
  copy and the update (6 x fp32 params) plus every layer's activations of a batch kept for the backward
  pass (the inference live set x layers x 3, at the training batch and full length)."""
  m = cfg.model
  acts = sum(memory.stage_activations(m).values()) * (m.num_layers + 2) * 3 * cfg.batch_size
  return 4 * (6 * memory.num_params(m) + acts)


def device_memory_bytes() -> int:
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # CPU: host memory


def max_group_size(cfg, limit: int = 256) -> int:
  """How many members of this config train together: half the device memory over the per-member
  estimate, at most `limit` (>= 1)."""
  return int(max(1, min(limit, device_memory_bytes() // 2 // train_bytes_per_member(cfg))))


@functools.lru_cache(maxsize=32)
def _init_program(model_json: str, task: str):
  model_cfg = ml_collections.ConfigDict(json.loads(model_json))
  one = lambda seed: models.init_params(model_cfg, jax.random.key(seed), task)
  return jax.jit(jax.vmap(one))


def init_members(model_cfg, seeds: list[int], task: str = "classify", init_from: list[str] | None = None):
  """Stacked initial params (leading axis G): member i from key(seeds[i]), its encoder replaced by the
  saved encoder init_from[i] where that is set."""
  params = jax.device_get(_init_program(model_cfg.to_json(), task)(np.asarray(seeds, np.int32)))
  for i, path in enumerate(init_from or []):
    if path:
      enc = jax.device_get(load_encoder(path, model_cfg))
      params["encoder"] = jax.tree.map(lambda stack, e: _set_row(stack, i, e), params["encoder"], enc)
  return params


def _set_row(stack: np.ndarray, i: int, row) -> np.ndarray:
  stack = np.array(stack)
  stack[i] = row
  return stack


def member_params(tree, i: int):
  return jax.tree.map(lambda x: x[i], tree)


def train_group(cfgs: list, workdirs: list, report: Callable | None = None,
                group_dir: str | os.PathLike | None = None) -> list[dict]:
  """Fine-tunes G configs that differ only in GROUP_KNOBS as one vmapped program over stacked params.

  Each member writes what train_and_evaluate writes to workdirs[i]/finetune; the group's checkpoints go
  to `group_dir` (default: beside the members). `report(i, step, validation)` may raise Pruned to stop
  member i. Returns per member train_and_evaluate's result plus "status": "complete", or
  {"status": "failed", "error"} (non-finite loss) or {"status": "pruned", "error", "pruned_at"}.
  """
  if not cfgs or len(cfgs) != len(workdirs):
    raise ValueError("train_group needs one workdir per config, and at least one config")
  cfgs = [c.copy_and_resolve_references() for c in cfgs]  # num_labels follows the task; callers' stay
  if len({group_key(c) for c in cfgs}) > 1:
    raise ValueError(f"the configs of a group may differ only in {', '.join(GROUP_KNOBS)}")
  configs.validate(cfgs[0].model)
  workdirs = [Path(w) for w in workdirs]
  init_from = []
  for c, wd in zip(cfgs, workdirs):
    if c.pretrain.steps > 0 and not c.init_from:
      pretrain(c, wd / "pretrain")
    init_from.append(c.init_from or (str(wd / "pretrain") if c.pretrain.steps > 0 else ""))
  first = cfgs[0]
  task, tok, enc = prepare_task(first)
  for c in cfgs:
    if task.num_labels != c.model.num_labels:
      with c.model.unlocked():
        c.model.num_labels = task.num_labels
  member_dirs = [_prepare_workdir(c, wd / "finetune") for c, wd in zip(cfgs, workdirs)]
  if len(cfgs) == 1:
    gdir = member_dirs[0]
  else:
    gdir = Path(group_dir) if group_dir else _default_group_dir(member_dirs)
    _prepare_workdir(first, gdir, {"group_key": group_key(first), "members": [str(d) for d in member_dirs]})
  per_epoch = len(enc["train"]) // first.batch_size
  total = first.steps or first.epochs * per_epoch
  progs = programs_for(first, "classify", task.is_regression, total)
  params = init_members(first.model, [c.seed for c in cfgs], "classify", init_from)
  eval_every = min(first.eval_every or per_epoch, total)
  t0 = time.perf_counter()
  out = fit(programs=progs, members=[Member(c, d) for c, d in zip(cfgs, member_dirs)], init_params_G=params,
            train_arrays=enc["train"], total_steps=total, eval_every=eval_every,
            evaluate=_make_classify_eval(progs, first, enc, task.is_regression), select=task.metric,
            group_dir=gdir, batch_size=first.batch_size, report=report, log_every=first.log_every,
            checkpoint_every=first.checkpoint_every, bucket_window=first.bucket_window,
            desc=f"finetune {first.preset}")
  best = jax.device_get(out["state"]["best"])
  seq_len = int(enc["train"].ids.shape[1])
  steps_per_s = (total - out["resumed_from"]) / max(out["elapsed_s"], 1e-9)
  train_time = time.perf_counter() - t0
  results = []
  for i, (c, wd) in enumerate(zip(cfgs, member_dirs)):
    if i in out["outcomes"]:
      results.append(out["outcomes"][i])
      out["loggers"][i].close({"outcome": out["outcomes"][i]})
      continue
    b = member_params(best, i)
    result = {**_unflatten(b["metrics"]), "metric": task.metric, "best_step": int(b["step"]), "steps": total,
              "recipe": c.get("recipe", "spec"),
              "train_time_s": train_time, "seq_len": seq_len,
              "num_params": memory.num_params(c.model), "workdir": str(wd), "group_size": len(cfgs),
              "steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * c.batch_size * seq_len}
    save_params(wd / "model", b["params"], c.model, tok.model_path)
    (wd / "result.json").write_text(json.dumps(result, indent=2))
    out["loggers"][i].close({"best": result})
    results.append({**result, "status": "complete"})
  return results


def _default_group_dir(member_dirs: list[Path]) -> Path:
  names = "|".join(str(d) for d in member_dirs)
  return Path(os.path.commonpath([str(d.parent.resolve()) for d in member_dirs])) / (
      "group-" + configs.config_hash({"members": names})[:10])


def train_and_evaluate(cfg, workdir, report: Callable | None = None) -> dict:
  """Fine-tunes a classifier on cfg.task; returns metrics of the best validation evaluation.

  Raises TrainingDiverged on a non-finite loss and Pruned when `report(step, validation)` raised it."""
  member_report = (lambda i, step, validation: report(step, validation)) if report else None
  [res] = train_group([cfg], [workdir], member_report)
  status = res.pop("status")
  if status == "failed":
    raise TrainingDiverged(res["error"])
  if status == "pruned":
    raise Pruned(res["error"])
  return res


def _make_classify_eval(progs: Programs, cfg, enc, is_regression):
  names = (["spearman", "pearson", "mse"] if is_regression else ["accuracy", "mcc", "macro_f1"])

  def evaluate(params_G):
    if params_G is None:
      return [f"{s}/{n}" for s in ("validation", "test") for n in names]
    g = jax.tree.leaves(params_G)[0].shape[0]
    out = [{} for _ in range(g)]
    for split in ("validation", "test"):
      arr = enc[split]
      logits_G = np.concatenate([np.asarray(progs.apply(params_G, b["ids"]))[:, b["weights"] > 0]
                                 for b in batch_lib.eval_batches(arr, cfg.batch_size)], axis=1)
      for i in range(g):
        out[i][split] = metrics.task_metrics(arr.labels, logits_G[i], is_regression)
    return out
  return evaluate


def pretrain(cfg, workdir) -> dict:
  """MLM + NSP on the offline corpus (spec 4); saves the model (encoder + heads) to workdir/model."""
  pc = cfg.pretrain
  cache = cfg.cache_dir or None
  wd = _prepare_workdir(cfg, workdir)
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus or None, cache_dir=cache)
  docs = data.read_documents(cfg.corpus) if cfg.corpus else data.pretraining_documents(cache)
  seq_len = min(pc.seq_len or cfg.model.max_len, cfg.model.max_len)
  arrays = batch_lib.pretraining_arrays(docs, tok, seq_len, cfg.seed)
  order = np.random.default_rng(cfg.seed + 1).permutation(len(arrays))
  held, train_idx = order[:pc.eval_pairs], order[pc.eval_pairs:]
  train_arr = batch_lib.Arrays(arrays.ids[train_idx, :seq_len], arrays.labels[train_idx])
  eval_arr = batch_lib.Arrays(arrays.ids[held, :seq_len], arrays.labels[held])
  progs = programs_for(cfg, "pretrain")
  pcfg = cfg.copy_and_resolve_references()
  pcfg.learning_rate = pc.learning_rate

  def evaluate(params_G):
    if params_G is None:
      return ["validation/mlm_loss"]
    rows = [jax.device_get(progs.apply(params_G, b, jax.random.key(i)))
            for i, b in enumerate(batch_lib.eval_batches(eval_arr, pc.batch_size)) if b["weights"].all()]
    g = len(rows[0]["loss"])
    return [{"validation": {k: float(np.mean([r[k][i] for r in rows])) for k in rows[0]}} for i in range(g)]

  out = fit(programs=progs, members=[Member(pcfg, wd)], init_params_G=init_members(cfg.model, [cfg.seed],
                                                                                  "pretrain"),
            train_arrays=train_arr, total_steps=pc.steps, eval_every=pc.eval_every or max(pc.steps // 5, 1),
            evaluate=evaluate, select=None, group_dir=wd, batch_size=pc.batch_size, log_every=cfg.log_every,
            desc=f"pretrain {cfg.preset}")
  if 0 in out["outcomes"]:
    out["loggers"][0].close()
    raise TrainingDiverged(out["outcomes"][0]["error"])
  final = member_params(jax.device_get(out["state"]["params"]), 0)
  result = {**evaluate(jax.tree.map(lambda x: x[None], final))[0], "steps": pc.steps,
            "train_time_s": out["elapsed_s"], "seq_len": seq_len}
  out["loggers"][0].log(pc.steps, _eval_flat({k: v for k, v in result.items() if k == "validation"}))
  save_params(wd / "model", final, cfg.model, tok.model_path)
  (wd / "result.json").write_text(json.dumps(result, indent=2))
  out["loggers"][0].close({"pretrain": result})
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
  """Fine-tunes seeds cfg.seed .. cfg.seed + seeds - 1 as vmapped groups (train_group, as many per group
  as fit the device); returns the per-seed results, the failed seeds and mean/std over the others."""
  workdir = Path(workdir)
  cfgs = []
  for i in range(seeds):
    c = cfg.copy_and_resolve_references()
    c.seed = cfg.seed + i
    if c.wandb.name:
      c.wandb.name = f"{cfg.wandb.name}-seed{c.seed}"
    cfgs.append(c)
  if seeds == 1:
    return _seed_summary([{**train_and_evaluate(cfgs[0], workdir), "status": "complete"}])
  size = max_group_size(cfg)
  outcomes = []
  for lo in range(0, seeds, size):
    part = cfgs[lo:lo + size]
    outcomes += train_group(part, [workdir / f"seed_{c.seed}" for c in part],
                            group_dir=workdir / f"group_seeds_{part[0].seed}-{part[-1].seed}")
  return _seed_summary(outcomes)


def _seed_summary(outcomes: list[dict]) -> dict:
  runs = [o for o in outcomes if o["status"] == "complete"]
  failed = [o for o in outcomes if o["status"] != "complete"]
  if not runs:
    raise TrainingDiverged(f"every seed failed; the first: {failed[0]['error']}")
  summary = {}
  for split in ("validation", "test"):
    for k in runs[0][split]:
      vals = np.array([r[split][k] for r in runs])
      summary[f"{split}/{k}"] = (float(vals.mean()), float(vals.std()))
  return {"runs": runs, "failed": failed, "summary": summary}


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
  """The training config of the flags: the preset, the recipe (only where `args` has a `recipe`: see
  recipe_from_args), then --task/--steps/--seed/--pretrain-steps/--init-from, then --set overrides."""
  overrides = list(args.set) + [e for e in extra if e.startswith("--config.")]
  unknown = [e for e in extra if not e.startswith("--config.")]
  if unknown:
    raise configs.ConfigError(f"unknown arguments: {' '.join(unknown)}")

  def build(recipe: str | None):
    cfg = get_config(args.preset)
    if recipe:
      recipes.apply(cfg, recipe)
    for name in ("task", "steps", "seed", "init_from"):
      if getattr(args, name, None) is not None:
        cfg[name] = getattr(args, name)
    if getattr(args, "pretrain_steps", None) is not None:
      cfg.pretrain.steps = args.pretrain_steps
    if args.wandb:
      cfg.wandb.mode = args.wandb
    configs.apply_overrides(cfg, overrides)
    return cfg

  cfg = build(None)
  if getattr(args, "recipe", None):
    cfg = build(recipe_from_args(args.recipe, cfg))
  configs.validate(cfg.model)
  return cfg


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
  ap = argparse.ArgumentParser(prog="python -m embbert_jax.train",
                               description="Fine-tune a model preset on a task (optionally pre-train first).")
  add_common_flags(ap)
  ap.add_argument("--pretrain-steps", type=int, default=None, help="MLM+NSP steps before fine-tuning")
  ap.add_argument("--init-from", default=None, help="a pre-training workdir (or saved model) to start from")
  ap.add_argument("--seeds", type=int, default=1, help="fine-tune this many seeds; report mean and std")
  ap.add_argument("--recipe", default=recipes.AUTO, choices=[recipes.AUTO, *recipes.RECIPES],
                  help="training recipe; auto: 'spec' (the paper's fine-tuning) with a pre-trained encoder "
                       "(--init-from, --pretrain-steps), else 'scratch'. --set overrides its fields")
  args, extra = ap.parse_known_args(argv)
  if not args.init_from:
    args.init_from = None
  try:
    cfg = config_from_args(args, extra)
  except (configs.ConfigError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(recipes.describe(cfg), flush=True)
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
  for f in out["failed"]:
    print(f"a seed {f['status']}: {f['error']}", file=sys.stderr)
  if args.seeds > 1:
    print("mean +- std over seeds: " + ", ".join(f"{k} {m:.4f} +- {s:.4f}" for k, (m, s) in out["summary"].items()
                                                 if k.startswith("test/")))
  add_baselines(cfg, out["runs"])


def add_baselines(cfg, runs: list[dict]) -> None:
  """Prints the reference baselines of cfg.task (baselines.for_task: majority class, TF-IDF + logistic
  regression on the same split) and adds them to each run's result.json."""
  from embbert_jax import baselines
  ref = baselines.for_task(str(cfg.task), cfg.cache_dir or None)
  print("\n".join(baselines.format_lines(ref)))
  for r in runs:
    path = Path(r["workdir"]) / "result.json"
    if path.is_file():
      data.write_text_atomic(path, json.dumps({**json.loads(path.read_text()), "baselines": ref}, indent=2))


if __name__ == "__main__":
  main()
