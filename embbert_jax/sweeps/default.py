"""The default search space: EmbBERT from about 0.20 MB to about 31 MB (fp32), 2,160 distinct configs.

`python -m embbert_jax.sweep --budget 2MB` keeps the configs whose weights + activations fit the budget
under the chosen dtype policy (961 of them at 2 MB fp32), picks --max-trials of them spread evenly along
the memory axis (space.spread_order) and trains those, smallest first. Grids are per model field (spec
notation in comments); the space is the product of a family's grids. A `train_grid` (below) trains each
config several times (seeds, learning rates), grouped in one program. Copy this file to define another.
"""

import ml_collections


def get_config():
  space = ml_collections.ConfigDict()
  space.families = ml_collections.ConfigDict()
  space.families.embbert = dict(
      preset="embbert",  # every field not in the grid or in `fixed` keeps the headline model's value
      # Not the paper's head: the sequence's mean (over an identity path around each layer) instead of
      # position 0, plus the label readout, so every config starts as the linear model of its label
      # column (one for two classes, one per class for more) and learns what it adds. Over 5 splits x 3 seeds of four
      # tasks, paired against the paper's head: amazon +1.37, nyt +0.86, tweets -0.32 points (README,
      # "The label readout"). `fixed=dict()` here gives the paper's layer and head.
      fixed=dict(head="mean_pool", residual=True, label_readout=True),
      grid=dict(
          vocab_size=(2048, 8192, 16384),  # V (each size trains its own BPE tokenizer once, cached)
          max_len=(64, 128, 256),  # L: positions and the length memory is budgeted at
          hidden=(32, 64, 128, 256, 512),  # d
          embed_dim=(16, 32),  # r
          conv_expansion=(1.0, 2.0),  # e
          conv_kernel=(8, 16, 32),  # k
          num_layers=(1, 2, 4, 6),  # N
      ),
  )
  # Overrides of the training recipe for every trial (none: the sweep's --recipe, by default the from-scratch
  # recipe of recipes.py: linear warmup over 10 % of the run to lr 1e-3, then cosine decay, the token
  # table at 10x that rate; the spec's fine-tuning recipe with --pretrain-steps). Before recipes, trials
  # used a constant lr 3e-3: on rt_polarity 300 steps of the smallest config reached validation MCC
  # 0.08 / 0.17 / 0.15 at 1e-3 / 3e-3 / 1e-2 constant.
  space.train = ml_collections.ConfigDict()
  # Optional per-config training axes: every config then trains once per point of their product, each a
  # trial of its own, and the sweep trains the trials of one config together in one vmapped program
  # (train.train_group; --no-group: one at a time). --max-trials counts these trials. On the frontier a
  # config scores the mean over its seeds (repeats: the max would reward luck) at its best setting of
  # the other knobs (tuning: what the config reaches with a tuned learning rate), e.g.
  #   space.train_grid = ml_collections.ConfigDict(dict(learning_rate=(1e-3, 3e-3), seed=(0, 1, 2)))
  # Off here: one trial per config, as the README's measured sweep ran. tiny_grouped.py (beside this) uses one.
  space.evals = 4  # validations per trial: the early-stopping rungs, and the best one is kept
  # Pareto early stopping (engine.hopeless): from `after` x steps on, stop a trial when `min_better` trials
  # that are no larger already beat it by `margin` (validation metric) at the same step. Only the last
  # rung before the end: from scratch, most configs sit at MCC 0 (one class) for the first half of a
  # short run and only then start to learn, so earlier rungs stopped configs that ended on the frontier.
  space.early_stop = ml_collections.ConfigDict(dict(enabled=True, after=0.75, margin=0.02, min_better=2))
  return space
