"""Pre-trains an EmbBERT supernet (MLM + NSP, sandwich rule) once, so that every config of a space inherits.

    python -m embbert_jax.supernet_train --space default --budget 2MB --vocab 8192 --steps 20000 --time-budget 2h

(default --workdir: <cache>/supernets/default-2MB-v8192, where `train --init supernet` finds it.)

The supernet holds every config of the space that fits the budget at this vocabulary (supernet.py says how
each axis slices). Each step draws the sandwich (supernet.sandwich: the largest, the smallest and one
random config per memory band, seeded by the step), computes each child's MLM + NSP loss on the same batch
through the program of its (d, N) (the cheap axes r, e, k are masks, so there are at most |d| x |N|
programs), sums the gradients (each is zero outside its child's slice) and takes one clipped AdamW step
with linear warmup and cosine decay over --steps. Every child learns from the labels (HAT, AutoTinyBERT);
in-place distillation from the largest (BigNAS) is not used: with a supernet this far from convergence the
largest child's outputs would be a worse target than the labels.

Every --eval-every steps: the held-out MLM loss and accuracy (and NSP accuracy) of the largest and the
smallest child on a fixed held-out slice of the corpus, logged to metrics.jsonl, the console and the
orbax checkpoint step. Killed at any point, the same command resumes from the last checkpoint with the
same batches and children. At the end (or when --time-budget runs out) the supernet is saved as a model
folder (`artifacts.save_model`: params, config, tokenizer) with manifest.json: the exact command, the corpus
hash, seed, steps, wall time and the final metrics.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from embbert_jax import asha, configs, data, files, losses, memory, models, space as space_lib, supernet
from embbert_jax import batches as batch_lib
from embbert_jax import tokenizer as tok_lib

MANIFEST = "manifest.json"


def space_children(space_name: str, budget: int, vocab: int, policy: str = "fp32") -> list:
  """The EmbBERT configs of a space that fit `budget` at vocabulary `vocab` (the supernet's children)."""
  cands = space_lib.fits(space_lib.enumerate_space(space_lib.load(space_name), num_labels=2), policy, budget)
  out = [c.model for c in cands if c.model.vocab_size == vocab and c.model.arch == "embbert"]
  if not out:
    raise supernet.SupernetError(f"no EmbBERT config of space {space_name!r} fits "
                                 f"{memory.format_bytes(budget)} at vocabulary {vocab}")
  return out


def _loss_fn(sup, hidden: int, layers: int, mask_rate: float, evaluation: bool = False):
  """One (d, N) child's MLM + NSP loss as a function of the supernet's parameters: its value and gradient
  for training, or (evaluation) its value with dropout off. Built once per process and key."""
  return _cached_loss_fn(sup.to_json(), hidden, layers, mask_rate, evaluation)


@functools.lru_cache(maxsize=64)
def _cached_loss_fn(sup_json: str, hidden: int, layers: int, mask_rate: float, evaluation: bool):
  sup = configs.model_config(**json.loads(sup_json))
  cfg = supernet.train_config(sup, hidden, layers)
  if evaluation:
    cfg = configs.model_config(**{**cfg.to_dict(), "dropout": 0.0})
  model = models.build_model(cfg, "pretrain")

  def loss(params, m, batch, rng):
    child = supernet.train_params(params, sup, hidden, layers, m)
    return losses.pretrain_loss(model, child, batch, rng, sup.vocab_size, mask_rate)
  return jax.jit(loss if evaluation else jax.value_and_grad(loss, has_aux=True))


@functools.lru_cache(maxsize=8)
def _programs(sup_json: str, learning_rate: float, warmup: int, steps: int, weight_decay: float):
  """(optimizer, jitted init, jitted update summing the children's gradients), built once per process."""
  sup = configs.model_config(**json.loads(sup_json))
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, warmup), max(steps, warmup + 1),
                                                end_value=0.0)
  opt = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay))

  def init(key):
    params = models.init_params(sup, key, task="pretrain")
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt.init(params)}

  def update(state, *grads):
    total = jax.tree.map(lambda *g: sum(g), *grads)  # each child's gradient is zero outside its slice
    updates, opt_state = opt.update(total, state["opt_state"], state["params"])
    return {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state}
  return opt, jax.jit(init), jax.jit(update, donate_argnums=0)


class Trainer:
  """The supernet's parameters, optimiser and per-(d, N) programs."""

  def __init__(self, sup, children: list, args):
    self.sup, self.children, self.args = sup, children, args
    self.sizes = np.array([memory.total_bytes(c, args.policy) for c in children], dtype=np.float64)
    self.opt, self._init, self.update = _programs(sup.to_json(), args.learning_rate, args.warmup, args.steps,
                                                  args.weight_decay)

  def init(self, seed: int) -> dict:
    return self._init(jax.random.key(seed))

  def program(self, child, evaluation: bool = False):
    return _loss_fn(self.sup, *supernet.shape_key(child), self.args.mask_rate, evaluation)

  def sandwich(self, step: int) -> list:
    rng = np.random.default_rng([self.args.seed, step])
    return supernet.sandwich(self.children, self.sup, rng, n_random=self.args.random_children,
                             policy=self.args.policy, sizes=self.sizes)

  def step(self, state, batch, step: int) -> tuple[dict, dict]:
    grads, metrics = [], {}
    key = jax.random.fold_in(jax.random.key(self.args.seed), step)
    for i, child in enumerate(self.sandwich(step)):
      (_, aux), g = self.program(child)(state["params"], supernet.masks(self.sup, child), batch,
                                        jax.random.fold_in(key, i))
      grads.append(g)
      if i < 2:
        metrics[("largest" if i == 0 else "smallest")] = aux
    return self.update(state, *grads), metrics

  def evaluate(self, params, eval_arr) -> dict[str, float]:
    out = {}
    for name, child in (("largest", self.sup), ("smallest", self.sandwich(0)[1])):
      rows = [jax.device_get(self.program(child, True)(params, supernet.masks(self.sup, child), b,
                                                       jax.random.key(i))[1])
              for i, b in enumerate(batch_lib.eval_batches(eval_arr, self.args.batch_size)) if b["weights"].all()]
      for k in ("mlm_loss", "mlm_accuracy", "nsp_accuracy"):
        out[f"{name}/{k}"] = float(np.mean([r[k] for r in rows]))
    return out


def _log(path: Path, row: dict) -> None:
  """One whole line of metrics.jsonl (files.append_line), echoed to the console."""
  files.append_line(path, json.dumps(row))
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
        file=sys.stderr, flush=True)


# Flags that may change when a run is resumed: they do not change what step k computes.
_RESUMABLE = ("time_budget", "workdir", "eval_every", "log_every")


def _check_recipe(wd: Path, args) -> None:
  """The first run writes its recipe; a resumed run must have the same one (else step k would differ)."""
  recipe = {k: v for k, v in sorted(vars(args).items()) if k not in _RESUMABLE}
  path = wd / "recipe.json"
  if path.exists():
    old = json.loads(path.read_text())
    diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in recipe.items() if old.get(k) != v]
    if diff:
      raise ValueError(f"{wd} holds a supernet run with {', '.join(diff)}; use the same flags or another --workdir")
  else:
    files.write_text_atomic(path, json.dumps(recipe, indent=2) + "\n")


def run(args, argv: list[str]) -> dict:
  budget = memory.parse_budget(args.budget)
  children = space_children(args.space, budget, args.vocab, args.policy)
  sup = supernet.supernet_config(children)
  wd = Path(args.workdir or default_workdir(args)).resolve()
  wd.mkdir(parents=True, exist_ok=True)
  _check_recipe(wd, args)
  cache = args.cache_dir or None
  corpus = Path(args.corpus) if args.corpus else data.pretraining_corpus(cache)
  # The default corpus takes its shipped tokenizer (as train and pretrain do), so saved supernets match runs.
  tok = tok_lib.get_tokenizer(args.vocab, corpus_path=args.corpus or None, cache_dir=cache)
  seq_len = min(args.seq_len, sup.max_len)
  first, second, labels = batch_lib.nsp_pairs(data.read_documents(corpus), args.seed)
  keep = np.sort(np.random.default_rng(args.seed).permutation(len(labels))[:args.max_pairs])
  arrays = batch_lib.Arrays(tok.encode_batch([first[i] for i in keep], [second[i] for i in keep],
                                            max_len=seq_len), labels[keep])
  order = np.random.default_rng(args.seed + 1).permutation(len(arrays))
  held, train_idx = order[:args.eval_pairs], order[args.eval_pairs:]
  train_arr = batch_lib.Arrays(arrays.ids[train_idx], arrays.labels[train_idx])
  eval_arr = batch_lib.Arrays(arrays.ids[held], arrays.labels[held])
  tr = Trainer(sup, children, args)
  state = tr.init(args.seed)
  mgr = ocp.CheckpointManager(wd / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  metrics_path = wd / "metrics.jsonl"
  rows = files.read_jsonl(metrics_path) if metrics_path.exists() else []
  start = 0
  if mgr.latest_step() is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state = mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore(abstract))
    start = int(state["step"])
    print(f"resuming the supernet from step {start} ({wd / 'checkpoints'})", file=sys.stderr)
  print(f"supernet of {len(children)} configs at V={args.vocab}: d<={sup.hidden}, N<={sup.num_layers}, "
        f"r<={sup.embed_dim}, e<={sup.conv_expansion:g}, k<={sup.conv_kernel}, L<={sup.max_len}; "
        f"{memory.num_params(sup, 'pretrain'):,} parameters with the MLM/NSP heads", file=sys.stderr)
  rows = [r for r in rows if r["step"] <= start]  # rows past the checkpoint are logged again
  files.write_text_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
  t0, elapsed0 = time.time(), (rows[-1]["wall_s"] if rows else 0.0)
  deadline = asha.parse_duration(args.time_budget) if args.time_budget else float("inf")
  stopped = "steps"
  try:
    for step, batch in batch_lib.train_batches(train_arr, args.batch_size, args.seed, start):
      if step >= args.steps:
        break
      if elapsed0 + time.time() - t0 >= deadline:
        stopped = "time budget"
        break
      state, m = tr.step(state, batch, step)
      done = step + 1
      if done % args.log_every == 0:
        host = jax.device_get(m)
        rate = (time.time() - t0) / (done - start)  # seconds per step in this process
        _log(metrics_path, {"step": done, "wall_s": elapsed0 + time.time() - t0,
                                  **{f"train/{c}/{k}": float(v[k]) for c, v in host.items()
                                     for k in ("mlm_loss", "mlm_accuracy")},
                                  "eta_s": rate * (args.steps - done)})
      if done % args.eval_every == 0:
        _log(metrics_path, {"step": done, "wall_s": elapsed0 + time.time() - t0,
                                  **{f"validation/{k}": v for k, v in tr.evaluate(state["params"], eval_arr).items()}})
        mgr.save(done, args=ocp.args.StandardSave(state))
    final_step = int(state["step"])
    if mgr.latest_step() != final_step:
      mgr.save(final_step, args=ocp.args.StandardSave(state), force=True)
  finally:
    mgr.wait_until_finished()
    mgr.close()
  final = tr.evaluate(state["params"], eval_arr)
  wall = elapsed0 + time.time() - t0
  _log(metrics_path, {"step": final_step, "wall_s": wall, **{f"validation/{k}": v for k, v in final.items()}})
  from embbert_jax import artifacts
  out = artifacts.save_model(wd / "model", jax.device_get(state["params"]), sup, tokenizer_path=tok.model_path)
  manifest = {"command": "python -m embbert_jax.supernet_train " + shlex.join(argv),
              "space": args.space, "budget_bytes": budget, "policy": args.policy, "vocab_size": args.vocab,
              "children": len(children), "supernet": sup.to_dict(), "corpus": corpus.name,
              "corpus_sha256": files.sha256_file(corpus), "seed": args.seed, "steps": final_step,
              "stopped_by": stopped, "wall_s": wall, "final": final, "recipe": vars(args)}
  files.write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
  print(f"supernet saved to {out} after {final_step} steps ({stopped}), {wall / 60:.1f} min: "
        + ", ".join(f"{k} {v:.4f}" for k, v in final.items()), file=sys.stderr)
  return manifest


def default_workdir(args) -> Path:
  """<cache>/supernets/<space>-<budget>-v<vocab>: where `train --init supernet` looks (inits.py)."""
  name = f"{Path(args.space).stem}-{args.budget}-v{args.vocab}"
  return data.resolve_cache_dir(args.cache_dir or None) / "supernets" / name


def load(path: str | Path) -> tuple[dict, Any, dict]:
  """(params, supernet config, manifest) of a saved supernet folder."""
  from embbert_jax import artifacts
  params, sup, _ = artifacts.load_model(path)
  manifest_path = Path(path) / MANIFEST
  manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
  return params, sup, manifest


def inherit(path: str | Path, child, loaded: tuple | None = None) -> dict:
  """The encoder parameters `child` inherits from the supernet saved at `path` (float32); `loaded` is
  load(path)'s result, to slice many children from one read."""
  params, sup, _ = loaded or load(path)
  enc = supernet.extract(params, sup, child, "pretrain")["encoder"]
  return jax.tree.map(lambda x: np.asarray(x, np.float32), enc)


def get_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="python -m embbert_jax.supernet_train", description=__doc__.splitlines()[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  ap.add_argument("--space", default="default", help="search space (sweeps/<name>.py or a path)")
  ap.add_argument("--budget", default="2MB", help="memory budget the children fit (" + memory.BUDGET_FORMS + ")")
  ap.add_argument("--policy", default="fp32", choices=memory.POLICIES)
  ap.add_argument("--vocab", type=int, default=8192, help="vocabulary size: one supernet per vocabulary")
  ap.add_argument("--workdir", default="", help="default <cache>/supernets/<space>-<budget>-v<vocab>, where "
                  "`python -m embbert_jax.train --init supernet` (and auto) finds it")
  ap.add_argument("--steps", type=int, default=20000, help="optimizer steps (the schedule's length)")
  ap.add_argument("--time-budget", default="", help="stop (and save) after this wall time, e.g. 2h, 45m")
  ap.add_argument("--batch-size", type=int, default=32)
  ap.add_argument("--seq-len", type=int, default=128)
  ap.add_argument("--learning-rate", type=float, default=1e-3)
  ap.add_argument("--warmup", type=int, default=1000)
  ap.add_argument("--weight-decay", type=float, default=0.01)
  ap.add_argument("--mask-rate", type=float, default=0.15)
  ap.add_argument("--random-children", type=int, default=2, help="random children per step, one per band")
  ap.add_argument("--eval-every", type=int, default=500)
  ap.add_argument("--eval-pairs", type=int, default=2048, help="held-out NSP pairs for validation")
  ap.add_argument("--max-pairs", type=int, default=300_000, help="NSP pairs drawn from the corpus (seeded) and "
                  "tokenized up front; 300k at length 128 is 150 MB of ids, more than 20k steps of batch 32 see")
  ap.add_argument("--log-every", type=int, default=50)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--corpus", default="", help="a text file of documents (blank-line separated) instead of "
                  "the offline corpus")
  ap.add_argument("--cache-dir", default="", help="data and tokenizer cache (default: $EMBBERT_JAX_CACHE)")
  return ap


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  args = get_parser().parse_args(argv)
  try:
    run(args, argv)
  except (supernet.SupernetError, memory.BudgetError, data.DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
  main()
