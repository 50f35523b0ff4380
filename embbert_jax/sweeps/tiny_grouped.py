"""A tiny grouped space for tests and demos: 2 small EmbBERT configs x a train grid of 2 learning rates x
2 seeds, i.e. 8 member trials, 4 per config, which the sweep trains 4 at a time in one program
(trainer.train_group) unless --no-group. Try:

    python -m embbert_jax.sweep --space tiny_grouped --budget 2MB --steps 40
"""

import ml_collections


def get_config():
  space = ml_collections.ConfigDict()
  space.families = ml_collections.ConfigDict()
  space.families.embbert = dict(preset="nano", grid=dict(vocab_size=(512,), max_len=(32,), hidden=(16, 32),
                                                         num_layers=(1,)))
  space.train = ml_collections.ConfigDict(dict(batch_size=16))
  # Per config: one member trial per point of this product (seeds are repeats, averaged on the frontier;
  # the learning rate is tuned: the config's point is its best one). See embbert_jax/sweeps/default.py.
  space.train_grid = ml_collections.ConfigDict(dict(learning_rate=(1e-3, 3e-3), seed=(0, 1)))
  space.evals = 2
  space.early_stop = ml_collections.ConfigDict(dict(enabled=False, after=0.5, margin=0.02, min_better=2))
  return space
