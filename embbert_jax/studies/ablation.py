"""The headline EmbBERT with one switch changed at a time (spec section 8.1, the model's ablation fields).

    python -m embbert_jax.experiment ablation [--quick | --cpu] [--tasks rt_polarity,sms_spam]

Every arm is pre-trained as the headline model is, except `no_pretrain` (with --quick only the headline
is: see `quick` below). Paper numbers (spec section 5):
the headline 87.19 and no pre-training 80.82 (TinyNLP mean accuracy, other tasks); the paper has no
number for the other switches one at a time (its "standard residual FFN at equal budget" comparison,
GLUE 63.5 vs 57.1, is a different model, not one of these arms). Every arm is an EmbBERT model, which the
authors' code runs with the padding mask as ours does: no published switch (configs.PUBLISHED) applies.
"""

from embbert_jax.study import CPU_TASKS, CPU_TRAIN, QUICK_TRAIN, cpu_arm, paper_study


def get_config():
  c = paper_study("ablation",
                  "Paper column: TinyNLP mean accuracy (spec section 5), other tasks.")
  switch = lambda name, **model: dict(name=name, preset="embbert", pretrain=True,
                                      overrides={f"model.{k}": v for k, v in model.items()})
  c.arms = [
      dict(name="headline", preset="embbert", pretrain=True, paper=dict(value=87.19, metric="TinyNLP acc")),
      switch("no_attention", use_attention=False),
      switch("no_conv", use_conv=False),
      switch("residual", residual=True),
      switch("sum", aggregation="sum"),
      switch("standard_embedder", embedder="standard"),
      dict(name="no_pretrain", preset="embbert", pretrain=False,
           paper=dict(value=80.82, metric="TinyNLP acc")),
  ]
  c.figure = "bars"
  # --quick: 100 pre-training steps (far too few to matter; they show the mechanics) for the headline arm
  # only; the switch arms then run from scratch and compare against no_pretrain, their equal in training.
  c.quick = dict(seeds=1, pretrain_steps=100, train=QUICK_TRAIN,
                 arms=[dict(a, pretrain=a["name"] == "headline") for a in c.arms])
  # --cpu: the claim "the conv branch and the weighted difference pay", from the token vectors
  # (study.cpu_arm), 3 seeds x 3 tasks; `headline` equals baselines_2mb --cpu's `embbert` (--reuse it).
  c.cpu = dict(seeds=3, tasks=CPU_TASKS, pretrain_steps=0, train=CPU_TRAIN,
               arms=[cpu_arm(a) for a in c.arms if a["name"] in ("headline", "no_conv", "sum")])
  return c
