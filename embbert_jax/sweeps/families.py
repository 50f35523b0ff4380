"""EmbBERT against its baselines and its ablations under one budget: which architecture family owns the
frontier? Families share fields such as vocab_size, but each has its own grid (its parameters are named
"<family>.<field>" in the ledger). Try: python -m embbert_jax.sweep --space families --budget 2MB
"""

import ml_collections


def get_config():
  common = dict(vocab_size=(2048, 8192), max_len=(64, 128))  # V, L
  space = ml_collections.ConfigDict()
  space.families = ml_collections.ConfigDict()
  space.families.embbert = dict(preset="embbert", grid=dict(
      **common, hidden=(64, 128), num_layers=(2, 4), conv_kernel=(16, 32)))
  # Ablations of the EmbBERT layer (spec 8.1): identity path, sum instead of the weighted difference,
  # one branch only.
  space.families.embbert_ablations = dict(preset="embbert", grid=dict(
      **common, hidden=(128,), num_layers=(4,), residual=(False, True), aggregation=("difference", "sum"),
      use_conv=(True, False)))
  space.families.nanobert_efficient = dict(preset="nanobert_efficient", grid=dict(
      **common, hidden=(64, 128), num_layers=(2, 4), ffn_dim=(89, 178)))
  space.families.bert = dict(preset="bert", grid=dict(
      **common, hidden=(64, 80), num_layers=(2,), ffn_dim=(160,)))
  space.families.mamba = dict(preset="mamba", grid=dict(**common, hidden=(64,), num_layers=(3, 5)))
  space.families.embedder_conv = dict(preset="embedder_conv", grid=dict(**common, hidden=(160, 320)))
  space.train = ml_collections.ConfigDict(dict(learning_rate=1e-3))
  space.evals = 4
  space.early_stop = ml_collections.ConfigDict(dict(enabled=True, after=0.5, margin=0.02, min_better=2))
  return space
