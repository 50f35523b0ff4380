"""The objective of a training step: the fine-tuning and MLM+NSP losses (softmax and losses in f32) and the
optimiser (clip + AdamW, spec section 4), whose learning rate and weight decay live in its state so the
members of a group share one update program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from embbert_jax import batches as batch_lib
from embbert_jax import recipes


def make_optimizer(cfg, learning_rate: float | None = None, weight_decay: float | None = None,
                   total_steps: int | None = None) -> optax.GradientTransformation:
  """Clip + AdamW, its hyperparameters held in the optimiser state (`optax.inject_hyperparams`), so the
  members of a group share one update program and each carries its own learning rate and weight decay.

  A non-constant `cfg.schedule` (recipes.schedule_shape over `total_steps`, default cfg.total_steps or
  cfg.steps) scales AdamW's whole update, decay term included: exactly AdamW with learning rate
  peak x shape(step), while the peak stays a per-member value in the state. The constant schedule adds
  nothing, so the spec recipe's optimiser has no schedule counter in its state.

  Clip, AdamW and the schedule run on all parameters as one flat vector (`optax.flatten`; the same
  arithmetic, element by element, and the clip's global norm over the same numbers): per tensor, every
  one of the ~30 tensors got its own norm, moment and update kernels, and the train step had twice the
  kernels to compile (552 -> 270 fusions for a 2 MB sweep config; its compile 6.6 -> 4.6 s on this CPU,
  benchmarks/compile_options.py). The moments are flat vectors in the state: checkpoints of the per-tensor
  layout do not resume (a one-line error)."""
  return with_token_scale(cfg, optax.flatten(optax.chain(*update_parts(cfg, learning_rate, weight_decay,
                                                                       total_steps))))


def with_token_scale(cfg, optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
  """`optimizer`, then the token table's whole update (decay included) times cfg.token_lr_scale (0 freezes
  the table; 1 adds nothing)."""
  token_scale = float(cfg.get("token_lr_scale", 1.0))
  if token_scale != 1.0:
    optimizer = optax.chain(optimizer, optax.masked(optax.scale(token_scale), token_table_mask))
  return optimizer


def update_parts(cfg, learning_rate: float | None = None, weight_decay: float | None = None,
                 total_steps: int | None = None) -> list[optax.GradientTransformation]:
  """Clip, AdamW (hyperparameters in its state) and a non-constant schedule: the transformations
  make_optimizer runs on one flat vector (benchmarks/compile_options.py chains them per tensor as its
  baseline)."""
  lr = cfg.learning_rate if learning_rate is None else learning_rate
  wd = cfg.weight_decay if weight_decay is None else weight_decay
  parts = [optax.clip_by_global_norm(cfg.grad_clip),
           optax.inject_hyperparams(optax.adamw)(learning_rate=lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                                 weight_decay=wd)]
  sched = cfg.get("schedule")
  if sched is not None and not recipes.is_constant(sched):
    total = total_steps or cfg.get("total_steps") or cfg.get("steps")
    parts.append(optax.scale_by_schedule(recipes.schedule_shape(sched, int(total or 0))))
  return parts


def flat_vector(tree) -> jax.Array:
  """Every leaf of `tree` in one vector, in tree order: the concatenation `optax.flatten` makes, so the
  norms logged from it share that concatenation in the compiled step instead of a reduction per tensor."""
  return jnp.concatenate([jnp.reshape(x, [-1]) for x in jax.tree.leaves(tree)])


def token_table_mask(params):
  """True at the token table (encoder/embedder/token/embedding), False elsewhere."""
  path_of = lambda path: "/".join(str(getattr(k, "key", k)) for k in path)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path_of(path).endswith("encoder/embedder/token/embedding"), params)


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


def pretrain_loss(model, params, batch, rng, vocab_size: int, mask_rate: float, train: bool = True):
  """MLM + NSP loss; `train=False` (evaluation) turns dropout off (the masking still follows `rng`)."""
  k_mask, k_drop = jax.random.split(rng)
  inputs, positions, targets, weights = batch_lib.mask_tokens(k_mask, batch["ids"], vocab_size, mask_rate)
  mlm_logits, nsp_logits = model.apply({"params": params}, inputs, train=train, rngs={"dropout": k_drop},
                                       positions_BxP=positions)
  per_tok = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, targets)
  n = jnp.maximum(weights.sum(), 1.0)
  mlm = (per_tok * weights).sum() / n
  nsp = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, batch["labels"]).mean()
  mlm_acc = ((jnp.argmax(mlm_logits, -1) == targets) * weights).sum() / n
  nsp_acc = jnp.mean(jnp.argmax(nsp_logits, -1) == batch["labels"])
  return mlm + nsp, {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "mlm_accuracy": mlm_acc,
                     "nsp_accuracy": nsp_acc}
