"""Training: `fit`, the one loop, and the runs built on it.

`train_group(cfgs, workdirs)` fine-tunes G configs that differ only in GROUP_KNOBS as one program over
stacked params (`train_and_evaluate` is a group of one); `pretrain(cfg, workdir)` runs MLM + NSP and saves
the encoder; `run_seeds` trains a config's seeds as groups sized by `max_group_size`
(memory.training_bytes). `fit`:

* the state is a plain dict {step, seed, params, opt_state, alive, failed_at, best}; dropout keys are
  `fold_in(seed, step)` and the batch order a function of (seed, epoch), so a run resumed from an orbax
  checkpoint replays exactly what an uninterrupted run does;
* a member whose loss is not finite stops as failed (`TrainingDiverged` for a lone run) before anything
  after the last good checkpoint is written; the others go on;
* every file it writes (config.json, members.json, result.json, metrics.jsonl, wandb_id.txt) goes through
  files.py, so a run killed at any moment resumes: no half-written file is ever read back;
* metrics go to metrics.jsonl and wandb (runlog.py) and to a tqdm bar with steps/s and tokens/s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from embbert_jax import batches as batch_lib
from embbert_jax import configs, data, evaluation, files, labelcols, memory, signals, wordvecs
from embbert_jax import tokenizer as tok_lib
from embbert_jax.programs import (Programs, init_members, make_mesh, member_params, programs_for,
                                  run_ladder, save_params)
from embbert_jax.runlog import Logger, split_time


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


class Pruned(Exception):
  """Raised by a `report` callback to stop a hopeless run early (the sweep's pruner)."""


@dataclasses.dataclass
class Member:
  """One training of a group: its config (seed, learning rate, weight decay, wandb name) and the folder
  of its metrics.jsonl and wandb run."""
  cfg: Any
  workdir: Path


def fit(*, programs: Programs, members: list[Member], init_params_G: Any, train_arrays: batch_lib.Arrays,
        total_steps: int, eval_every: int, evaluate: Callable[[Any], Any], select: str | None,
        group_dir: Path, batch_size: int, report: Callable | None = None, log_every: int = 50,
        checkpoint_every: int = 0, bucket_window: int = 0, desc: str = "train", stop_at: int = 0,
        patience: int = 0, ladder: tuple[int, ...] | None = None) -> dict:
  """Trains the G members of a group together for `total_steps` steps, evaluating every `eval_every`.

  `init_params_G` is stacked (leading axis G). `evaluate(params_G)` returns one {split: {metric: value}}
  per member (`evaluate(None)` names the metrics); with `select`, each member keeps the params of its best
  validation `select`. `report(i, step, validation)` may raise Pruned to stop member i. A member whose
  loss is not finite stops as failed; the others go on. Resumes from `group_dir/checkpoints`. Batches
  are assembled and sent to the device by a thread two steps ahead (batches.prefetch); `bucket_window`
  > 0 groups examples of similar length into the widths of `ladder` (programs.bucket_ladder; default:
  batches.train_batches' own).

  `stop_at` (0 < stop_at < total_steps) pauses the run after that step (evaluated and checkpointed): the
  schedule still spans `total_steps`, and a later call with a larger `stop_at` resumes where it paused (the
  sweep's rungs). `patience` > 0 ends the run once no live member has improved its best validation
  `select` for that many evaluations (plateau stopping; the best params are kept either way).
  Returns {"state", "loggers", "outcomes" ({i: failed/pruned record}), "elapsed_s", "resumed_from",
  "stopped_at", "widths" (the batch widths this call stepped at), "timing"}: timing splits the wall time
  into compile (first step and first evaluation over their steady cost), steps, evaluation, checkpoints.
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
  loggers = [Logger(m.workdir, m.cfg, start, desc.split()[0]) for m in members]
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

  timing = {"first_step_s": 0.0, "evals_s": [], "checkpoint_s": 0.0, "new_shape_s": []}
  seen_shapes: set = set()
  widths: set[int] = set()  # the batch widths this call stepped at

  def save(step):
    t = time.perf_counter()
    mgr.save(step, args=ocp.args.StandardSave(state))
    files.write_json_atomic(outcomes_file, outcomes)
    timing["checkpoint_s"] += time.perf_counter() - t

  shard = NamedSharding(mesh, P(None, "data"))
  stream = batch_lib.prefetch(_group_batches(train_arrays, batch_size, members, start, bucket_window,
                                              ladder),
                              size=2, put=lambda item: batch_lib.to_device(item, shard))
  end = min(total_steps, stop_at) if stop_at > 0 else total_steps
  done, plateau = start, False
  try:
    for step, batch, batch_tokens in stream:
      if step >= end or not alive.any() or plateau:
        break
      signals.check()  # a stop requested by SIGTERM/SIGINT (a sweep worker: signals.py) acts here, between steps
      tokens += np.asarray(batch_tokens)
      shape = tuple(x.shape for x in jax.tree.leaves(batch))
      widths.add(int(batch["ids"].shape[-1]))
      new_shape = step != start and shape not in seen_shapes  # a bucketed length seen for the first time
      seen_shapes.add(shape)
      if new_shape:
        jax.block_until_ready(state["step"])
        t_new = time.perf_counter()
      state, m = programs.step(state, batch)
      if step == start:  # the first step of this call: compile + one step (one host sync, once)
        jax.block_until_ready(state["step"])
        timing["first_step_s"] = time.perf_counter() - t0
      elif new_shape:  # its compile (a host sync per new shape: a few per call)
        jax.block_until_ready(state["step"])
        timing["new_shape_s"].append(time.perf_counter() - t_new)
      pending.append((step, m))
      bar.update(1)
      done = step + 1
      last = done == end
      if done % log_every == 0 or done % eval_every == 0 or last:
        flush(done)
      if (done % eval_every == 0 or last) and alive.any():
        t_eval = time.perf_counter()
        state = _evaluate_members(state, programs, evaluate, select, eval_keys, done, alive, loggers,
                                  report, outcomes, repl)
        timing["evals_s"].append(time.perf_counter() - t_eval)
        if patience > 0 and select is not None:
          best_step = np.asarray(jax.device_get(state["best"]["step"]))[alive]
          plateau = bool(best_step.size) and int(done - best_step.max()) >= patience * eval_every
      if done % ckpt_every == 0 or last or not alive.any() or plateau:
        save(done)
    mgr.wait_until_finished()
  finally:
    stream.close()
    bar.close()
    mgr.close()
  elapsed = time.perf_counter() - t0
  return {"state": state, "loggers": loggers, "outcomes": outcomes, "elapsed_s": elapsed,
          "resumed_from": start, "stopped_at": done, "plateau": plateau, "widths": sorted(widths),
          "timing": split_time(timing, elapsed, done - start)}


def _group_batches(arrays: batch_lib.Arrays, batch_size: int, members: list[Member], start: int,
                   bucket_window: int = 0, ladder: tuple[int, ...] | None = None):
  """(step, batch (G, B, L), real tokens per member): member i's batch is the one a lone run with its
  seed would see (with bucketing, padded to the longest member's length: outputs do not change)."""
  streams = [batch_lib.train_batches(arrays, batch_size, m.cfg.seed, start, bucket_window,
                                     ladder=ladder) for m in members]
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


def prepare_task(cfg):
  """(task, tokenizer, encoded splits at cfg.seq_len or the auto length)."""
  cache = cfg.cache_dir or None
  task = data.load_task(cfg.task, cache_dir=cache)
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus or None, cache_dir=cache)
  enc = batch_lib.encode_task(task, tok, cfg.model.max_len, cfg.add_cls)
  seq_len = cfg.seq_len or batch_lib.auto_seq_len(enc["train"].ids, cfg.model.max_len)
  return task, tok, batch_lib.trim(enc, seq_len)


# Fields a resumed run may change: where this call pauses (the sweep's rungs move it forward).
RESUMABLE_FIELDS = ("stop_at",)


def _prepare_workdir(cfg, workdir, record: dict | None = None) -> Path:
  """Creates and locks the folder (until the train_group/pretrain call ends: files.hold_folder; another
  process gets FolderBusy) and records its config; refuses a folder that holds a run of another config.
  Returns it absolute: orbax refuses a relative checkpoint path (`--workdir runs/x` failed at the first save)."""
  wd = files.hold_folder(workdir)
  cfg_file = wd / "config.json"
  want = record if record is not None else json.loads(cfg.to_json())
  for key in RESUMABLE_FIELDS:  # how far this call goes is not what the run is
    want.pop(key, None)
  if cfg_file.exists():
    if json.loads(cfg_file.read_text()) != want:
      raise ValueError(f"{wd} holds a run with a different config; use another --workdir to start afresh")
  else:
    files.write_json_atomic(cfg_file, want)
  return wd


# Config fields in which the members of one group may differ (everything else, shapes included, is shared).
GROUP_KNOBS = ("seed", "learning_rate", "weight_decay", "init_from", "wandb.name", "wandb.group")


def group_key(cfg) -> str:
  """Equal keys: the trainings can run as one vmapped program (train_group)."""
  flat = configs.flatten_dict(cfg.to_dict())
  return configs.config_hash({k: v for k, v in flat.items() if k not in GROUP_KNOBS})


def device_memory_bytes() -> int:
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # CPU: host memory


def max_group_size(cfg, limit: int = 256) -> int:
  """How many members of this config train together: half the device memory over the per-member
  estimate (memory.training_bytes), at most `limit` (>= 1)."""
  return int(max(1, min(limit, device_memory_bytes() // 2 // memory.training_bytes(cfg.model, cfg.batch_size))))


@files.releases_folder_locks
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
  if len({group_key(c) for c in cfgs}) > 1:
    raise ValueError(f"the configs of a group may differ only in {', '.join(GROUP_KNOBS)}")
  configs.validate(cfgs[0].model)
  workdirs = [files.hold_folder(w) for w in workdirs]  # locked before pre-training, until this call ends
  init_from = []
  for c, wd in zip(cfgs, workdirs):
    if c.pretrain.steps > 0 and not c.init_from:
      pretrain(c, wd / "pretrain")
    init_from.append(c.init_from or (str(wd / "pretrain") if c.pretrain.steps > 0 else ""))
  task, tok, enc = prepare_task(cfgs[0])
  # num_labels follows the task: new configs, the callers' stay as they are.
  cfgs = [configs.with_fields(c, {"model.num_labels": task.num_labels}) for c in cfgs]
  first = cfgs[0]
  member_dirs = [_prepare_workdir(c, wd / "finetune") for c, wd in zip(cfgs, workdirs)]
  if len(cfgs) == 1:
    gdir = member_dirs[0]
  else:
    gdir = _prepare_workdir(first, Path(group_dir) if group_dir else _default_group_dir(member_dirs),
                            {"group_key": group_key(first), "members": [str(d) for d in member_dirs]})
  per_epoch = len(enc["train"]) // first.batch_size
  total = run_length(first, len(enc["train"]))
  progs = programs_for(first, "classify", task.is_regression, total)  # a schedule spans the whole run
  vectors = str(wordvecs.find(first.model.vocab_size, first.corpus, first.cache_dir or None)) \
      if first.get("token_vectors") else ""
  t_ladder = time.perf_counter()  # tracing the forward pass at 1-3 widths: counted as compile below
  ladder = run_ladder(gdir, first, enc["train"], total, len(cfgs))
  ladder_s = time.perf_counter() - t_ladder
  t_init = time.perf_counter()  # mostly the init program's compile (seconds; a cache load when warm)
  cols = labelcols.for_run(first, enc["train"], task) if vectors else None
  params = init_members(first.model, [c.seed for c in cfgs], "classify", init_from, vectors, cols)
  init_s = time.perf_counter() - t_init
  eval_every = min(first.eval_every or per_epoch, total)
  t0 = time.perf_counter()
  out = fit(programs=progs, members=[Member(c, d) for c, d in zip(cfgs, member_dirs)], init_params_G=params,
            train_arrays=enc["train"], total_steps=total, eval_every=eval_every,
            evaluate=evaluation.classify_eval(progs, first, enc, task.is_regression, ladder), select=task.metric,
            group_dir=gdir, batch_size=first.batch_size, report=report, log_every=first.log_every,
            checkpoint_every=first.checkpoint_every, bucket_window=first.bucket_window,
            desc=f"finetune {first.preset}", stop_at=int(first.get("stop_at", 0)),
            patience=int(first.get("patience", 0)),
            ladder=ladder)
  best = jax.device_get(out["state"]["best"])
  out["timing"] = {**out["timing"], "init_s": init_s, "compile_s": out["timing"]["compile_s"] + ladder_s}
  seq_len = int(enc["train"].ids.shape[1])
  steps_per_s = (out["stopped_at"] - out["resumed_from"]) / max(out["elapsed_s"], 1e-9)
  train_time = time.perf_counter() - t0
  results = []
  for i, (c, wd) in enumerate(zip(cfgs, member_dirs)):
    if i in out["outcomes"]:
      results.append(out["outcomes"][i])
      out["loggers"][i].close({"outcome": out["outcomes"][i]})
      continue
    b = member_params(best, i)
    result = {**_unflatten(b["metrics"]), "metric": task.metric, "best_step": int(b["step"]),
              "steps": out["stopped_at"], "horizon": total, "plateau": out["plateau"], "timing": out["timing"],
              "recipe": c.get("recipe", "spec"), "train_time_s": train_time, "seq_len": seq_len,
              "widths": out["widths"],
              "num_params": memory.num_params(c.model), "workdir": str(wd), "group_size": len(cfgs),
              "steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * c.batch_size * seq_len}
    save_params(wd / "model", b["params"], c.model, tok.model_path, label_names=task.label_names,
                add_cls=c.add_cls)
    files.write_json_atomic(wd / "result.json", result)
    out["loggers"][i].close({"best": result})
    results.append({**result, "status": "complete"})
  return results


def _default_group_dir(member_dirs: list[Path]) -> Path:
  names = "|".join(str(d) for d in member_dirs)
  return Path(os.path.commonpath([str(d.parent.resolve()) for d in member_dirs])) / (
      "group-" + configs.config_hash({"members": names})[:10])


def run_length(cfg, n_train: int | None = None) -> int:
  """The optimizer steps of cfg's whole run (the schedule's horizon): `steps`, else `epochs` epochs of
  the task's training split (loaded if `n_train` is not given)."""
  if cfg.steps:
    return int(cfg.steps)
  if n_train is None:
    n_train = len(prepare_task(cfg)[2]["train"])
  return int(cfg.epochs) * max(1, n_train // cfg.batch_size)


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


@files.releases_folder_locks
def pretrain(cfg, workdir, time_budget: float | None = None, command: str | None = None) -> dict:
  """MLM + NSP on the offline corpus (spec 4) with cfg.pretrain's schedule over pretrain.steps; saves the
  model (encoder + heads) to workdir/model with manifest.json (command, corpus sha256, seed, steps, wall
  time, final held-out metrics, the pairs used).

  Held-out MLM loss / perplexity / accuracy and NSP accuracy are measured without dropout on a fixed
  slice of whole documents no training pair comes from (pretraining.split_pairs). Training runs as chunks
  of `fit`, each ending at an evaluation and a checkpoint (a chunked run computes exactly what one `fit`
  would: batches and dropout keys are functions of (seed, step)); `time_budget` (seconds of training wall
  time, summed over resumes) ends it early, saved as at the last step. Rerun to resume after a kill."""
  from embbert_jax import pretraining
  pc = cfg.pretrain
  cache = cfg.cache_dir or None
  wd = _prepare_workdir(cfg, workdir)
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus or None, cache_dir=cache)
  corpus = Path(cfg.corpus) if cfg.corpus else data.pretraining_corpus(cache)
  seq_len = min(pc.seq_len or cfg.model.max_len, cfg.model.max_len)
  train_arr, eval_arr, info = pretraining.split_pairs(data.read_documents(corpus), tok, seq_len, cfg.seed,
                                                      pc.eval_pairs, pc.get("max_pairs", 0))
  if len(eval_arr) < pc.batch_size:
    raise ValueError(f"pretrain.eval_pairs ({len(eval_arr)} held out) must be at least the batch size {pc.batch_size}")
  progs = programs_for(cfg, "pretrain")
  pcfg = cfg.copy_and_resolve_references()
  pcfg.learning_rate = pc.learning_rate
  last: dict = {}

  def evaluate(params_G):
    if params_G is None:
      return ["validation/mlm_loss"]
    rows = [jax.device_get(progs.apply(params_G, b, jax.random.key(i)))
            for i, b in enumerate(batch_lib.eval_batches(eval_arr, pc.batch_size)) if b["weights"].all()]
    out = [{"validation": {k: float(np.mean([r[k][i] for r in rows])) for k in rows[0]}}
           for i in range(len(rows[0]["loss"]))]
    for o in out:
      o["validation"]["mlm_perplexity"] = float(np.exp(min(o["validation"]["mlm_loss"], 50.0)))
    last["validation"] = out[0]["validation"]
    return out

  eval_every = pc.eval_every or max(1, min(1000, pc.steps // 5))
  corpus_sha256 = files.sha256_file(corpus)  # once: the manifest is written at every checkpoint
  save = lambda params, steps, stopped_by, validation: pretraining.save_encoder(
      wd / "model", params, cfg, tok.model_path, corpus, corpus_sha256, steps=steps, stopped_by=stopped_by,
      wall_s=clock.elapsed, validation=validation, data_info=info, command=command)
  mgr = ocp.CheckpointManager(wd / "checkpoints", options=ocp.CheckpointManagerOptions(create=True))
  done = int(mgr.latest_step() or 0)
  mgr.close()
  init = init_members(cfg.model, [cfg.seed], "pretrain")
  clock = pretraining.Clock(time_budget, pretraining.elapsed_before(wd / "metrics.jsonl", done))
  stopped, out = "steps", None
  while True:
    end = clock.chunk_end(done, pc.steps, eval_every) if done < pc.steps else done
    if out is not None and end <= done:
      stopped = "steps" if done >= pc.steps else "time budget"
      break
    t = time.perf_counter()
    out = fit(programs=progs, members=[Member(pcfg, wd)], init_params_G=init, train_arrays=train_arr,
              total_steps=end, eval_every=eval_every, evaluate=evaluate, select=None, group_dir=wd,
              batch_size=pc.batch_size, log_every=cfg.log_every, desc=f"pretrain {cfg.preset}")
    if 0 in out["outcomes"]:
      out["loggers"][0].close()
      raise TrainingDiverged(out["outcomes"][0]["error"])
    clock.record(end - out["resumed_from"], time.perf_counter() - t)
    if end > out["resumed_from"]:
      line, eta = clock.progress(end, pc.steps, last.get("validation", {}))
      print(f"pretrain {cfg.preset}: {line}", file=sys.stderr, flush=True)
      out["loggers"][0].log(end, {"progress/wall_s": clock.elapsed, "progress/eta_s": eta,
                                  "validation/mlm_perplexity": last["validation"]["mlm_perplexity"]})
      if end < pc.steps:  # a usable encoder at every checkpoint: `--init WORKDIR` works while it runs
        save(member_params(jax.device_get(out["state"]["params"]), 0), end, "in progress", last["validation"])
    done = end
    out["loggers"][0].close()
  final = member_params(jax.device_get(out["state"]["params"]), 0)
  validation = evaluate(jax.tree.map(lambda x: x[None], final))[0]["validation"]
  result = {"validation": validation, "steps": done, "target_steps": pc.steps, "stopped_by": stopped,
            "train_time_s": clock.elapsed, "seq_len": seq_len, "data": info}
  save(final, done, stopped, validation)
  files.write_json_atomic(wd / "result.json", result)
  return result


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
  for split in evaluation.SPLITS:
    for k in runs[0][split]:
      vals = np.array([r[split][k] for r in runs])
      summary[f"{split}/{k}"] = (float(vals.mean()), float(vals.std()))
  return {"runs": runs, "failed": failed, "summary": summary}
