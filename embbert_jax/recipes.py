"""Training recipes: named sets of optimiser/schedule/length fields of a training config.

* "spec": the paper's fine-tuning protocol (spec section 4): AdamW lr 5e-5 constant, 10 epochs, batch 32.
  It assumes a pre-trained encoder; from scratch it learns slowly (README, Training).
* "scratch": for training every config from random init: linear warmup (10 % of the run) to a 20x higher
  peak learning rate, then cosine decay to zero, the token table at 10x that rate (README, "From scratch":
  the measurements behind the values, and how far they get).

A recipe is a table of config overrides, not code, so `--set` still overrides any field afterwards. The
learning-rate schedule is a *shape* in [0, 1] (`schedule_shape`) that multiplies each member's peak
learning rate, which stays a per-member value in the optimiser state (losses.make_optimizer), so members
of a group that differ in learning rate still share one program.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import optax

SCHEDULES = ("constant", "cosine", "linear")

# name -> overrides of train.get_config() (which itself is the spec recipe).
RECIPES: dict[str, dict[str, Any]] = {
    "spec": dict(learning_rate=5e-5, weight_decay=0.05, batch_size=32, epochs=10, label_smoothing=0.0,
                 token_lr_scale=1.0,
                 schedule=dict(kind="constant", warmup_steps=0, warmup_fraction=0.0, end_fraction=0.0)),
    # Measured on rt_polarity with the 4-layer headline (README, "From scratch"): lr 1e-3 over 10 epochs
    # beat 3e-4 over 5. The token table learns 10x faster (token_lr_scale): its entries start at the
    # N(0, 1) scale (models.table_init, and the token vectors' unit-std columns), ten times a Dense
    # kernel's U(+-1/sqrt(fan_in)), so at one learning rate AdamW's steps moved it ten times more slowly
    # relative to its values (README, "The token table's learning rate": the measurements).
    # 4 epochs, not 10 (2026-12-04): with the label columns and readout, runs peak after 2-3 epochs and the
    # long cosine tail only overfits; over 3 splits x 3 seeds of six tasks, 4 against 10 epochs gained
    # +0.84 (amazon) and +0.85 (three-class ratings), cost -0.69 on tweets, within 0.2 elsewhere (README,
    # "How long to train").
    "scratch": dict(learning_rate=1e-3, weight_decay=0.05, batch_size=32, epochs=4, label_smoothing=0.0,
                    token_lr_scale=10.0,
                    schedule=dict(kind="cosine", warmup_steps=0, warmup_fraction=0.1, end_fraction=0.0)),
}
AUTO = "auto"


def schedule_config() -> ml_collections.ConfigDict:
  """The spec's schedule (constant, no warmup): the default of every training config."""
  return ml_collections.ConfigDict(dict(RECIPES["spec"]["schedule"]))


def choose(name: str, pretrained: bool) -> str:
  """The recipe a run uses: `name`, or for "auto" the spec's when a pre-trained encoder is given
  (--init-from / --pretrain-steps: the paper's fine-tuning protocol), else "scratch"."""
  if name == AUTO:
    return "spec" if pretrained else "scratch"
  if name not in RECIPES:
    raise ValueError(f"unknown recipe {name!r}; known: {AUTO}, {', '.join(RECIPES)}")
  return name


def apply(cfg: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Sets the recipe's fields on the training config `cfg` (in place, through configs.set_field, the one
  setter) and records its name."""
  from embbert_jax import configs
  for key, value in RECIPES[name].items():
    for field, v in (((f"{key}.{k}", v) for k, v in value.items()) if isinstance(value, dict) else ((key, value),)):
      configs.set_field(cfg, field, v)
  configs.set_field(cfg, "recipe", name)
  return cfg


def warmup_steps(sched, total_steps: int) -> int:
  """Absolute warmup_steps if set, else warmup_fraction of the run; never the whole run."""
  w = int(sched.warmup_steps) or int(round(float(sched.warmup_fraction) * total_steps))
  return max(0, min(w, total_steps - 1)) if total_steps > 0 else 0


def is_constant(sched) -> bool:
  """True for the spec's schedule (no warmup, no decay): the optimiser then is exactly the spec's."""
  return sched.kind == "constant" and not sched.warmup_steps and not sched.warmup_fraction


def schedule_shape(sched, total_steps: int) -> optax.Schedule:
  """step -> multiplier of the peak learning rate: linear warmup from 0 to 1, then constant, cosine or
  linear decay to `end_fraction` at `total_steps`."""
  if sched.kind not in SCHEDULES:
    raise ValueError(f"unknown schedule kind {sched.kind!r}; known: {', '.join(SCHEDULES)}")
  if total_steps <= 0:
    raise ValueError("a schedule needs the run's total number of steps (> 0)")
  w = warmup_steps(sched, total_steps)
  end = float(sched.end_fraction)
  if sched.kind == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, w, total_steps, end_value=end)
  rest = max(total_steps - w, 1)
  after = optax.constant_schedule(1.0) if sched.kind == "constant" else optax.linear_schedule(1.0, end, rest)
  if w == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, 1.0, w), after], [w])


def describe(cfg) -> str:
  """One line naming the recipe and its values, printed by `train` before it starts."""
  s = cfg.schedule
  if is_constant(s):
    shape = "constant"
  else:
    warm = f"{s.warmup_steps} warmup steps" if s.warmup_steps else f"warmup {s.warmup_fraction:.0%} of the run"
    shape = warm + (", then constant" if s.kind == "constant" else f", then {s.kind} decay to {s.end_fraction:g}x")
  steps = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epochs"
  smooth = f", label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else ""
  token = float(cfg.get("token_lr_scale", 1.0))
  table = f", token table lr x{token:g}" if token != 1.0 else ""
  return (f"recipe {cfg.get('recipe', 'spec')}: AdamW lr {cfg.learning_rate:g} ({shape}){table}, weight decay "
          f"{cfg.weight_decay:g}, batch {cfg.batch_size}, {steps}{smooth}")
