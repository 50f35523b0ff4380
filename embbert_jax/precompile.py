"""A run's programs compiled before the run starts, so that it loads them instead of compiling them.

A sweep on a CPU spent about half its wall time compiling each new config's programs: its initial
params, its train step at each batch width, its evaluation and keep-best programs (README, issue 18).
With `sweep --compile-ahead` the worker compiles the programs of the config it expects to start next on
a thread while the current trial trains (compile_ahead.CompileAhead, through the trainer plug-in's
`precompile`): they go to JAX's persistent compilation cache, and the trial, when it starts, traces its
programs and loads them (a 4-layer config's rung-0 trial: compile + initial params 27.1 + 7.5 s cold,
6.9 + 1.3 s after precompile; benchmarks/compile_ahead.py). That pays where an accelerator trains and
the host's cores are idle; on a 2-core CPU an XLA compile keeps 1.5 cores busy and the trial beside it
steps at half its speed, so there it moves the work without shrinking it (`auto` leaves it off).

The programs are lowered from abstract values (shapes, dtypes, shardings) exactly as loop.fit and
loop.train_group call them: the same model, optimiser, schedule horizon, batch widths (bucket_ladder),
group size and evaluation batch, so the lowered modules, and with them the cache keys, are the same
(tests/test_precompile.py checks that the run then compiles nothing). Nothing here touches the
programs the running trial keeps (programs.programs_for(cached=False)). Without a persistent cache
(EMBBERT_JAX_COMPILATION_CACHE="") there is nowhere to put them, and precompile does nothing.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from embbert_jax import configs, evaluation, loop, models, programs


def enabled() -> bool:
  """True where compiled programs outlive the process: JAX's persistent compilation cache is on."""
  return bool(jax.config.jax_compilation_cache_dir)


def precompile(cfg, group_size: int = 1) -> dict:
  """Compiles into the persistent cache every program a fine-tuning run of `cfg` (train_group of
  `group_size` members that differ only in loop.GROUP_KNOBS) will call, and returns {"programs": how many,
  "seconds"}. Encoders to load (init_from, pre-training) change no program; token vectors neither."""
  if not enabled():
    return {"programs": 0, "seconds": 0.0}
  t0 = time.perf_counter()
  task, _, enc = loop.prepare_task(cfg)
  cfg = configs.with_fields(cfg, {"model.num_labels": task.num_labels})
  total = loop.run_length(cfg, len(enc["train"]))
  progs = programs.programs_for(cfg, "classify", task.is_regression, total, cached=False)
  model_cfg = configs.ModelConfig.from_dict(cfg.model)
  g = int(group_size)
  lowered = []

  seed = jax.ShapeDtypeStruct((), np.int32)
  lowered.append(programs.init_program(model_cfg, "classify").lower(seed))
  one = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0), "classify"))
  params_G = jax.tree.map(lambda x: jax.ShapeDtypeStruct((g,) + x.shape, x.dtype), one)
  names = sorted(evaluation.metric_names(task.is_regression))
  metrics_G = {k: jax.ShapeDtypeStruct((g,), np.float32) for k in names}
  vec = lambda dtype: jax.ShapeDtypeStruct((g,), dtype)
  init_args = (vec(np.int32), vec(np.float32), vec(np.float32), params_G, metrics_G)
  lowered.append(progs.init.lower(*init_args))
  state = progs.init.eval_shape(*init_args)

  mesh = loop.make_mesh()
  shard = NamedSharding(mesh, P(None, "data"))
  arrays = enc["train"]
  ladder = programs.bucket_ladder(cfg, arrays, total, g)
  widths = ladder if ladder else (int(arrays.ids.shape[1]),)
  for w in widths:
    batch = {"ids": jax.ShapeDtypeStruct((g, cfg.batch_size, int(w)), np.int32, sharding=shard),
             "labels": jax.ShapeDtypeStruct((g, cfg.batch_size), np.asarray(arrays.labels).dtype,
                                            sharding=shard)}
    lowered.append(progs.step.lower(state, batch))
  for w in evaluation.batch_widths(cfg, enc, ladder):
    lowered.append(progs.apply.lower(state["params"], jax.ShapeDtypeStruct((cfg.batch_size, w), np.int32)))
  lowered.append(progs.keep_best.lower(state, vec(bool), vec(np.float32), metrics_G,
                                       jax.ShapeDtypeStruct((), np.int32)))
  for low in lowered:
    low.compile()
  return {"programs": len(lowered), "seconds": time.perf_counter() - t0}

