"""A tiny space for tests and smoke runs: 8 small EmbBERT configs from about 30 kB to 0.1 MB (fp32)."""

import ml_collections


def get_config():
  space = ml_collections.ConfigDict()
  space.families = ml_collections.ConfigDict()
  space.families.embbert = dict(
      preset="nano",
      grid=dict(
          vocab_size=(512,),  # V
          max_len=(32, 64),  # L
          hidden=(16, 32),  # d
          num_layers=(1, 2),  # N
      ),
  )
  space.train = ml_collections.ConfigDict(dict(learning_rate=1e-3, batch_size=16))
  space.evals = 2
  space.early_stop = ml_collections.ConfigDict(dict(enabled=False, after=0.5, margin=0.02, min_better=2))
  return space
