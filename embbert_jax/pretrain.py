"""`python -m embbert_jax.pretrain --preset embbert --steps N`: MLM + NSP pre-training on the offline corpus.

    python -m embbert_jax.pretrain --preset embbert --steps 100000 --time-budget 2h --workdir runs/pre

The learning rate warms up and decays over --steps (config `pretrain.schedule`: linear warmup over 5 %,
cosine to 0.1x of the peak `pretrain.learning_rate`; `--set pretrain.schedule.kind=constant` etc.). Every
`pretrain.eval_every` steps (default: a fifth of the run, at most 1000) it prints the step, rate, ETA and
the held-out MLM loss / perplexity / accuracy and NSP accuracy on a fixed slice of whole corpus documents
that no training pair comes from; the same go to WORKDIR/metrics.jsonl (and wandb). `--time-budget 2h`
stops it there (training wall time, summed over resumes); the same command resumes a killed or
budget-stopped run from its last checkpoint. The model (encoder + heads) is saved to WORKDIR/model with
manifest.json (the exact command, corpus sha256, seed, steps, wall time, final metrics, pairs used).
Fine-tune from it with `python -m embbert_jax.train --preset embbert --init WORKDIR`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from embbert_jax import asha, cli, configs, data, train


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  ap = cli.parser("python -m embbert_jax.pretrain", __doc__.splitlines()[0])
  train.add_common_flags(ap)
  ap.add_argument("--time-budget", default="", help="stop (and save) after this much training wall time, "
                  "e.g. 2h, 45m, 90s; resuming continues the count")
  ap.add_argument("--max-pairs", type=cli.at_least(0), default=None, help="training pairs drawn from the corpus (seeded) "
                  "and tokenized up front (config pretrain.max_pairs, default 300000: 148 MiB of ids at "
                  "length 128, 1.3 GB peak while tokenizing); 0 = all 787k pairs of the 49 MB corpus "
                  "(385 MiB of ids, 2.8 GB peak)")
  args, extra = ap.parse_known_args(argv)
  try:
    steps = args.steps
    args.steps = None  # --steps here means pre-training steps
    cfg = train.config_from_args(args, extra)
    if steps is not None:
      configs.set_field(cfg, "pretrain.steps", steps)
    if args.max_pairs is not None:
      configs.set_field(cfg, "pretrain.max_pairs", args.max_pairs)
    if cfg.pretrain.steps <= 0:
      raise ValueError("give the number of pre-training steps with --steps N")
    configs.validate_training(cfg)
    budget = asha.parse_duration(args.time_budget) if args.time_budget else None
  except (configs.ConfigError, ValueError) as e:
    cli.bad_input(e)
  if args.distributed:
    import jax
    jax.distributed.initialize()
  train.enable_compilation_cache()
  workdir = Path(args.workdir) if args.workdir else train.default_workdir(cfg, "pretrain")
  try:
    result = train.pretrain(cfg, workdir, time_budget=budget,
                            command="python -m embbert_jax.pretrain " + shlex.join(argv))
  except (data.DataError, train.TrainingDiverged, ValueError, RuntimeError) as e:
    cli.failure(e)
  print(json.dumps(result, indent=2))
  print(f"{result['steps']} of {result['target_steps']} steps ({result['stopped_by']}); encoder saved to "
        f"{workdir / 'model'} (manifest.json); fine-tune with --init {workdir}")


if __name__ == "__main__":
  main()
