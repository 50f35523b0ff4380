"""Accuracy against total memory for the EmbBERT family nano .. big, plus a sweep's frontier configs.

    python -m embbert_jax.experiment scaling [--quick | --cpu] [--frontier SWEEP/frontier.csv]

The presets of spec section 2, pre-trained as in the paper, at fp32 and at the paper's int8 policy
(memory.estimate), with the paper's GLUE points (spec section 5) drawn on a secondary axis for the shape
of the curve only: GLUE is a different set of tasks and a different score. --frontier adds the Pareto
configs of a sweep (pareto.write_files' frontier.csv / trials.jsonl), trained the same way. Every arm is an
EmbBERT model, which the authors' code runs with the padding mask as ours does: no published switch
(configs.PUBLISHED) applies.
"""

from embbert_jax.study import CPU_TASKS, CPU_TRAIN, QUICK_TRAIN, cpu_arm, paper_study


def glue(value):
  return dict(value=value, metric="GLUE")


def get_config():
  c = paper_study("scaling",
                  "Paper column: the authors' GLUE score (spec section 5), other tasks.")
  c.arms = [dict(name=n, preset=n, pretrain=True, paper=glue(g))
            for n, g in (("nano", 55.3), ("tiny", 57.1), ("embbert", 63.5), ("med", 64.4), ("big", 65.5))]
  c.figure = "scaling"
  c.frontier = ""
  # --quick: from scratch, nano .. embbert only: a step of med costs about 7x the headline's and one of big
  # about 25x (FLOPs per token at length 64), more than the rest of the quick study on a shared 2-core CPU.
  c.quick = dict(seeds=1, pretrain_steps=0, train=QUICK_TRAIN, arms=c.arms[:3])
  # --cpu: nano .. embbert from the token vectors (study.cpu_arm), 3 seeds x 3 tasks: the rise up to 2 MB;
  # med and big (7x and 25x the headline's step) are hours each here. `embbert` equals baselines_2mb --cpu's.
  c.cpu = dict(seeds=3, tasks=CPU_TASKS, pretrain_steps=0, train=CPU_TRAIN, arms=[cpu_arm(a) for a in c.arms[:3]])
  return c
