"""EmbBERT against the 2 MB baselines of spec section 2, on the same tasks, data and budget.

    python -m embbert_jax.experiment baselines_2mb [--quick | --cpu] [--tasks rt_polarity,sms_spam]

Arms: EmbBERT with and without pre-training (the paper reports both: 87.19 and 80.82 TinyNLP), bert,
mamba, embedder, embedder_conv, nanobert, and nanobert_efficient with pre-training (the paper's 87.04) and
without. The spec does not say whether the paper pre-trained bert, mamba, the embedders and nanobert;
they run from scratch here. Paper numbers are TinyNLP mean accuracy (spec section 5): other tasks.
Full settings are the paper's recipe (spec section 4); --quick trains experiment.QUICK_TRAIN, one seed.

Every baseline is the published one (spec 8.7): configs.PUBLISHED switches on the authors' padding
behaviour (bert and nanobert attend to [PAD]; the embedders' and mamba's RMS pooling averages over the
padded width), and those arms train without length bucketing, so that every batch is padded to one width
(the longest example rounded up to 32), as the authors' tokenizer padded each split to its longest example.
"""

from embbert_jax import configs
from embbert_jax.study import CPU_TASKS, CPU_TRAIN, QUICK_TRAIN, cpu_arm, paper_study


def tinynlp(value):
  return dict(value=value, metric="TinyNLP acc")


def published(preset):
  """The arm overrides that make `preset` behave as the authors' module (none for the others)."""
  model = configs.PUBLISHED.get(configs.PRESETS[preset].get("arch", "embbert"), {})
  fixed_width = dict(bucket_window=0) if model else {}
  return {**{f"model.{k}": v for k, v in model.items()}, **fixed_width}


def arm(name, preset, **kw):
  return dict(name=name, preset=preset, overrides=published(preset), **kw)


def get_config():
  c = paper_study("baselines_2mb",
                  "Paper column: TinyNLP mean accuracy (spec section 5), other tasks.")
  c.arms = [
      arm("embbert", "embbert", pretrain=True, paper=tinynlp(87.19)),
      arm("embbert_scratch", "embbert", paper=tinynlp(80.82)),
      arm("bert", "bert", paper=tinynlp(83.74)),
      arm("mamba", "mamba", paper=tinynlp(83.86)),
      arm("embedder", "embedder", paper=tinynlp(86.42)),
      arm("embedder_conv", "embedder_conv", paper=tinynlp(86.51)),
      arm("nanobert", "nanobert"),
      arm("nanobert_efficient", "nanobert_efficient", pretrain=True, paper=tinynlp(87.04)),
      arm("nanobert_efficient_scratch", "nanobert_efficient"),
  ]
  c.figure = "bars"
  # --quick: one seed, 100 pre-training steps (far too few to matter; they show the mechanics), and no
  # nanobert_efficient_scratch (no paper number to set it against).
  c.quick = dict(seeds=1, pretrain_steps=100, train=QUICK_TRAIN, arms=c.arms[:-1])
  # --cpu: the claim "EmbBERT beats BERT-2MB and MAMBA-2MB at equal memory", every arm from the token
  # vectors (study.cpu_arm), 3 seeds x 3 tasks (about 20 min per arm on this 2-core CPU).
  c.cpu = dict(seeds=3, tasks=CPU_TASKS, pretrain_steps=0, train=CPU_TRAIN,
               arms=[cpu_arm(a) for a in c.arms if a["name"] in ("embbert", "bert", "mamba")])
  return c
