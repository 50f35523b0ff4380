"""EmbBERT against the 2 MB baselines of spec section 2, on the same tasks, data and budget.

    python -m embbert_jax.experiment baselines_2mb [--quick] [--tasks rt_polarity,sms_spam]

Arms: EmbBERT with and without pre-training (the paper reports both: 87.19 and 80.82 TinyNLP), bert,
mamba, embedder, embedder_conv, nanobert, and nanobert_efficient with pre-training (the paper's 87.04) and
without. The spec does not say whether the paper pre-trained bert, mamba, the embedders and nanobert;
they run from scratch here. Paper numbers are TinyNLP mean accuracy (spec section 5): other tasks.
Full settings are the paper's recipe (spec section 4); --quick trains experiment.QUICK_TRAIN, one seed.
"""

from embbert_jax.study import QUICK_TRAIN, paper_study


def tinynlp(value):
  return dict(value=value, metric="TinyNLP acc")


def get_config():
  c = paper_study("baselines_2mb",
                  "Paper column: TinyNLP mean accuracy (spec section 5), other tasks.")
  c.arms = [
      dict(name="embbert", preset="embbert", pretrain=True, paper=tinynlp(87.19)),
      dict(name="embbert_scratch", preset="embbert", paper=tinynlp(80.82)),
      dict(name="bert", preset="bert", paper=tinynlp(83.74)),
      dict(name="mamba", preset="mamba", paper=tinynlp(83.86)),
      dict(name="embedder", preset="embedder", paper=tinynlp(86.42)),
      dict(name="embedder_conv", preset="embedder_conv", paper=tinynlp(86.51)),
      dict(name="nanobert", preset="nanobert"),
      dict(name="nanobert_efficient", preset="nanobert_efficient", pretrain=True, paper=tinynlp(87.04)),
      dict(name="nanobert_efficient_scratch", preset="nanobert_efficient"),
  ]
  c.figure = "bars"
  # --quick: one seed, 100 pre-training steps (far too few to matter; they show the mechanics), and no
  # nanobert_efficient_scratch (no paper number to set it against).
  c.quick = dict(seeds=1, pretrain_steps=100, train=QUICK_TRAIN, arms=c.arms[:-1])
  return c
