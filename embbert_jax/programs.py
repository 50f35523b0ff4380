"""The jitted programs of a training shape, built once per process and shared by every trial of that shape.

* the step is a pure `train_step(state, batch, rng) -> (state, metrics)`; a group of G members runs it
  mapped over stacked params and optimiser states (`make_group_step`: `vmap`, or `lax.map` on CPU);
* the batch is sharded over a 1-D `('data',)` mesh and the state replicated (runs unchanged on 1 CPU, 8
  fake CPU devices, a GPU, or several hosts after `jax.distributed.initialize`), the state donated;
* `programs_for(cfg)` is cached on the frozen model config (configs.ModelConfig), the optimiser fields,
  the loss and the devices: trials of equal shapes reuse the traced and compiled programs;
* initial params of a group (`init_members`), optionally with a saved encoder (`load_encoder`), and the
  deployable model folder (`save_params`: artifacts.save_model's format);
* the batch widths a bucketed run compiles its step for (`bucket_ladder`, kept in the run's folder by
  `run_ladder`), priced by the forward pass's FLOPs at each width (`width_gflop`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from embbert_jax import batches as batch_lib
from embbert_jax import configs, executables, files, hostmem, models, recipes
from embbert_jax.losses import classify_loss, flat_vector, make_optimizer, pretrain_loss


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
  """A pure step: (state, batch, rng) -> (state, metrics), with grad and update norms logged."""
  def train_step(state, batch, rng):
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    aux = {**aux, "grad_norm": jnp.linalg.norm(flat_vector(grads)),
           "update_norm": jnp.linalg.norm(flat_vector(updates))}
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


# Optimiser fields shared by a group's program (learning rate and weight decay live in each member's state).
OPTIMIZER_FIELDS = ("grad_clip", "b1", "b2", "eps")


# A sweep trains many shapes one after another, and every compiled XLA:CPU program maps its machine code
# into the process: keeping them all grew a worker past 5 GB and near the kernel's 65,530 mappings, where
# LLVM failed ("Cannot allocate memory") and the worker died 15 minutes into a 45-minute sweep
# (benchmarks/sweep_memory.py). So at most PROGRAM_CACHE_SIZE shapes' programs are kept; a new shape beyond
# them flushes them all and JAX's own caches (jax.clear_caches: dropping our references alone left the
# mappings growing) and hands the freed heap back (hostmem.trim_heap); a shape that comes back loads its
# kept executables (executables.py) or, failing those, the persistent compilation cache's. A group's seeds
# and learning rates share one shape, so 2 covers a trial and the one before it (sweep_memory.py, 8 shapes
# at V = 2048: 4 kept, no trim, held 1.51 GB after the fourth; 2 kept, trimmed, 0.80 GB, and 1.05 GB at
# most). The two sweeps with kept executables peaked at 1.66 and 1.59 GB (README, Compile time).
PROGRAM_CACHE_SIZE = 2
_PROGRAMS: dict[tuple, "Programs"] = {}


def release_programs() -> None:
  """Drops every kept program (ours and JAX's caches) and returns the freed memory to the OS."""
  _PROGRAMS.clear()
  _init_program.cache_clear()
  jax.clear_caches()
  hostmem.trim_heap()


def _cached_programs(*key) -> "Programs":
  if key not in _PROGRAMS:
    if len(_PROGRAMS) >= PROGRAM_CACHE_SIZE:
      release_programs()
    _PROGRAMS[key] = _programs(*key)
  return _PROGRAMS[key]


def _programs(kind: str, model_cfg: configs.ModelConfig, opt: tuple, loss_args: tuple, devices: tuple,
              group_impl: str = "auto") -> Programs:
  """Built once per process for each distinct key (the frozen model config is hashable; _cached_programs),
  so trials of equal shapes (the seeds of run_seeds, a resumed run, a promoted trial) reuse the traced and
  compiled programs in memory; across processes and flushes each program loads its kept executable
  (executables.CachedProgram), or else JAX's persistent cache serves its compile
  (enable_compilation_cache)."""
  opt_d = dict(opt)  # learning rate / weight decay: per member
  if "schedule" in opt_d:  # frozen as JSON in the key (a ConfigDict is not hashable)
    opt_d["schedule"] = json.loads(opt_d["schedule"])
  opt_cfg = ml_collections.ConfigDict(opt_d)
  model = models.build_model(model_cfg, "pretrain" if kind == "pretrain" else "classify")
  if kind == "pretrain":
    vocab, rate = loss_args
    loss_fn = lambda p, b, r: pretrain_loss(model, p, b, r, vocab, rate)
    # Evaluation: dropout off, masks from `r` (a fixed key per held-out batch gives a comparable curve).
    eval_fn = lambda p, b, r: pretrain_loss(model, p, b, r, vocab, rate, train=False)[1]
    apply = lambda p_G, b, r: over_members(lambda p: eval_fn(p, b, r), group_impl)(p_G)
  else:
    is_regression, label_smoothing = loss_args
    loss_fn = lambda p, b, r: classify_loss(model, p, b, r, is_regression, label_smoothing)
    apply = lambda p_G, ids: over_members(lambda p: model.apply({"params": p}, ids), group_impl)(p_G)
  optimizer = make_optimizer(opt_cfg, 0.0, 0.0)  # the update reads each member's values from its state
  mesh = Mesh(np.array(devices), ("data",))
  repl, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))

  def init(seeds_G, lrs_G, wds_G, params_G, metrics_G):
    opt_state = jax.vmap(lambda p, lr, wd: make_optimizer(opt_cfg, lr, wd).init(p))(params_G, lrs_G, wds_G)
    g = seeds_G.shape[0]
    # Every leaf strongly typed, as keep_best returns them: a weakly typed -inf score made the first
    # evaluation change the state's type, and the step (each batch width) and keep_best traced, lowered
    # and compiled or loaded a second time in every trial.
    return {"step": jnp.zeros((), jnp.int32), "seed": seeds_G, "params": params_G, "opt_state": opt_state,
            "alive": jnp.ones((g,), bool), "failed_at": jnp.zeros((g,), jnp.int32),
            "best": {"score": jnp.full((g,), -jnp.inf, jnp.float32), "step": jnp.zeros((g,), jnp.int32),
                     "params": jax.tree.map(jnp.copy, params_G), "metrics": metrics_G}}

  def keep_best(state, improved_G, score_G, metrics_G, step):
    b = state["best"]
    best = {"score": jnp.where(improved_G, score_G, b["score"]),
            "step": jnp.where(improved_G, step, b["step"]),
            "params": _where_members(improved_G, state["params"], b["params"]),
            "metrics": _where_members(improved_G, metrics_G, b["metrics"])}
    return {**state, "best": best}

  key = (kind, model_cfg, opt, loss_args, devices, group_impl)  # _cached_programs' key
  kept = functools.partial(executables.CachedProgram, key=key)
  return Programs(
      init=kept(init, name="init", out_shardings=repl),
      step=kept(make_group_step(loss_fn, optimizer, group_impl), name="step", in_shardings=(repl, shard),
                out_shardings=(repl, repl), donate_argnums=0),
      keep_best=kept(keep_best, name="keep_best", out_shardings=repl, donate_argnums=0),
      apply=kept(apply, name="apply"))


def programs_for(cfg, kind: str = "classify", is_regression: bool = False, total_steps: int = 0,
                 cached: bool = True) -> Programs:
  """`total_steps`: the run's length, which a non-constant schedule needs (pre-training: cfg.pretrain.steps,
  its schedule cfg.pretrain.schedule; constant where a config has none). `cached=False` builds programs
  of their own that nothing keeps (precompile.py's, on a thread: adding them to the kept ones could flush
  the programs a trial is running)."""
  opt = tuple((k, cfg[k]) for k in OPTIMIZER_FIELDS)
  if kind == "pretrain":
    sched = cfg.pretrain.get("schedule", recipes.schedule_config())
    total_steps = total_steps or cfg.pretrain.steps
  else:
    sched = cfg.get("schedule", recipes.schedule_config())
  if not recipes.is_constant(sched):  # a constant schedule keeps the key (and the program) of before
    opt += (("schedule", json.dumps(sched.to_dict(), sort_keys=True)), ("total_steps", int(total_steps)))
  if kind != "pretrain" and float(cfg.get("token_lr_scale", 1.0)) != 1.0:  # (1.0 keeps the key of before)
    opt += (("token_lr_scale", float(cfg.token_lr_scale)),)
  loss_args = ((cfg.model.vocab_size, cfg.pretrain.mask_rate) if kind == "pretrain"
               else (is_regression, float(cfg.get("label_smoothing", 0.0))))
  key = (kind, configs.ModelConfig.from_dict(cfg.model), opt, loss_args, tuple(jax.devices()),
         cfg.get("group_impl", "auto"))
  return _cached_programs(*key) if cached else _programs(*key)


@functools.lru_cache(maxsize=256)
def _forward_gflop(model_cfg: configs.ModelConfig, width: int) -> float:
  return executables.cached_float("forward_gflop", (model_cfg, width), lambda: _count_gflop(model_cfg, width))


def _count_gflop(model_cfg: configs.ModelConfig, width: int) -> float:
  model = models.build_model(model_cfg)
  params = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0)))
  ids = jax.ShapeDtypeStruct((1, width), jnp.int32)
  lowered = jax.jit(lambda p, i: model.apply({"params": p}, i)).lower(params, ids)
  cost = lowered.cost_analysis()  # None where the backend has no count for a lowered program
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  flops = cost.get("flops") if isinstance(cost, dict) else None
  return float(flops) / 1e9 if flops else float("nan")


def width_gflop(model_cfg, widths) -> np.ndarray:
  """One example's classifier forward pass in GFLOP at each of `widths` tokens: XLA's count on the
  lowered program (traced, never compiled; a fraction of a second each) at three widths at most, the
  others from the quadratic through them. Attention is quadratic in the width and every other layer
  linear (the blocked Toeplitz conv too, at widths its blocks divide), so the quadratic is exact for
  the EmbBERT family (tested); mamba's scan is within 0.1 %. A train step at that width costs about
  three times it per example. NaN where the backend gives no count."""
  model_cfg = configs.ModelConfig.from_dict(model_cfg)
  widths = np.asarray(widths, np.float64)
  if len(widths) <= 3:
    return np.array([_forward_gflop(model_cfg, int(w)) for w in widths])
  knots = widths[[0, len(widths) // 2, -1]]
  coef = np.polyfit(knots, [_forward_gflop(model_cfg, int(w)) for w in knots], 2)
  return np.polyval(coef, widths)


def bucket_ladder(cfg, arrays: batch_lib.Arrays, total_steps: int, group_size: int = 1) -> tuple[int, ...] | None:
  """The batch widths a bucketed fine-tuning compiles its step for (None: bucketing off, one width):
  batches.length_ladder's least-padding ladder of at most cfg.bucket_lengths widths, and with
  cfg.bucket_compile_gflop > 0 as many of them as pay for their compiles: each example priced at the
  model's forward FLOPs at its width (programs.width_gflop) over the examples the run trains on
  (cfg.bucket_steps, else total_steps, x batch x members), one more width at that many GFLOP."""
  if not cfg.bucket_window:
    return None
  lengths = batch_lib.example_lengths(arrays.ids)
  top = batch_lib.width_for(lengths.max(), arrays.ids.shape[1])
  most = int(cfg.get("bucket_lengths", batch_lib.BUCKET_LENGTHS))
  least_padding = lambda: batch_lib.length_ladder(lengths, top, max_lengths=most)
  price = float(cfg.get("bucket_compile_gflop", 0.0))
  if price <= 0:
    return least_padding()
  passes = (int(cfg.get("bucket_steps", 0)) or total_steps) * cfg.batch_size * group_size / len(arrays)
  costs: dict[int, float] = {}

  def cost(widths):  # priced lazily: a ladder of one possible width needs no count
    costs.update(zip((int(w) for w in widths), width_gflop(cfg.model, widths)))
    return np.array([costs[int(w)] for w in widths])

  ladder = batch_lib.length_ladder(lengths, top, max_lengths=most, cost=cost, passes=passes, width_cost=price,
                                   group=group_size)
  if costs and not all(np.isfinite(list(costs.values()))):  # no FLOP count on this backend: pad least
    return least_padding()
  return ladder


def run_ladder(folder: Path, cfg, arrays, total_steps: int, group_size: int = 1) -> tuple[int, ...] | None:
  """bucket_ladder of the run in `folder`, kept there (ladder.json): a resumed run trims its batches as it
  did before, whatever FLOP counts this backend or version would give now."""
  path = folder / "ladder.json"
  if path.exists():
    widths = json.loads(path.read_text())["widths"]
    return tuple(widths) if widths else None
  ladder = bucket_ladder(cfg, arrays, total_steps, group_size)
  files.write_json_atomic(path, {"widths": list(ladder) if ladder else None})
  return ladder


def init_program(model_cfg: configs.ModelConfig, task: str):
  """One member's initial params from its seed. Not vmapped over a group's seeds: called once per seed,
  it is the same values from a program that compiles in 0.8x the time (3.6 vs 4.6 s for a 1-layer model,
  10.1 vs 12.0 s for a 6-layer one), which is most of a small trial's initial-params time."""
  return executables.CachedProgram(lambda seed: models.init_params(model_cfg, jax.random.key(seed), task),
                                   key=(model_cfg, task), name="init_params")


_init_program = functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)(init_program)  # the one trials call


def init_members(model_cfg, seeds: list[int], task: str = "classify", init_from: list[str] | None = None,
                 token_vectors: str = "", label_columns=None):
  """Stacked initial params (leading axis G): member i from key(seeds[i]), its encoder replaced by the
  saved encoder init_from[i] where that is set, else its token table taken from the token-vector table
  at path `token_vectors` where that is given (wordvecs.apply), its last columns then `label_columns` (a
  labelcols.Fit, which also starts a `label_readout` head) where those are given (labelcols.apply)."""
  program = _init_program(configs.ModelConfig.from_dict(model_cfg), task)
  members = jax.device_get([program(np.int32(s)) for s in seeds])
  params = jax.tree.map(lambda *rows: np.stack(rows), *members)
  if token_vectors:
    from embbert_jax import labelcols, wordvecs
    own = list(init_from or []) + [""] * (len(seeds) - len(init_from or []))
    takes = [not p for p in own]  # the members without an encoder of their own
    params = wordvecs.apply(params, token_vectors, takes)
    if label_columns is not None:
      params = labelcols.apply(params, label_columns, takes)
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


def save_params(path: Path, params, model_cfg, tokenizer_path, label_names=None, add_cls: bool = True) -> None:
  """The deployable model: float params + config (+ label names) + tokenizer (artifacts.save_model's format)."""
  from embbert_jax import artifacts
  artifacts.save_model(path, params, model_cfg, tokenizer_path=tokenizer_path, label_names=label_names,
                       add_cls=add_cls)


def is_supernet(folder: Path) -> bool:
  """A saved supernet (supernet_train's model folder): its manifest names the supernet config."""
  manifest = Path(folder) / "manifest.json"
  return manifest.is_file() and "supernet" in json.loads(manifest.read_text())


def load_encoder(path: str, model_cfg):
  """Encoder params of a saved model (a pre-training workdir or its model/ folder, or a shipped encoder:
  pretrained.load, sha256-checked, fp16 upcast to float32), shape-checked; from a saved supernet, the slice
  `model_cfg` inherits (supernet.extract; SupernetError unless it is a child)."""
  from embbert_jax import artifacts, pretrained, supernet
  p = Path(path)
  folder = p / "model" if (p / "model").exists() else p
  if pretrained.is_pretrained(folder):
    enc, saved_cfg, _ = pretrained.load(folder)
  else:
    params, saved_cfg, _ = artifacts.load_model(folder)
    enc = params["encoder"]
  if is_supernet(folder):
    child = configs.ModelConfig.from_dict(model_cfg)
    enc = supernet.extract(params, saved_cfg, child, "pretrain")["encoder"]
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), enc)
  expected = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0)))["encoder"]
  got = jax.tree.map(lambda x: (tuple(x.shape)), enc)
  want = jax.tree.map(lambda x: (tuple(x.shape)), expected)
  if got != want:
    raise ValueError(f"the encoder in {folder} ({saved_cfg.arch}, d={saved_cfg.hidden}) does not match "
                     f"the model config ({model_cfg.arch}, d={model_cfg.hidden})")
  return jax.tree.map(jnp.asarray, enc)
