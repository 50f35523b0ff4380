"""`python -m embbert_jax.pretrain --preset embbert --steps N`: MLM + NSP pre-training on the offline corpus.

The encoder is saved to WORKDIR/model; fine-tune from it with
`python -m embbert_jax.train --preset embbert --init-from WORKDIR`.
"""

from __future__ import annotations

import json
from pathlib import Path

from embbert_jax import cli, configs, data, train


def main(argv: list[str] | None = None) -> None:
  ap = cli.parser("python -m embbert_jax.pretrain", __doc__.splitlines()[0])
  train.add_common_flags(ap)
  args, extra = ap.parse_known_args(argv)
  try:
    steps = args.steps
    args.steps = None  # --steps here means pre-training steps
    cfg = train.config_from_args(args, extra)
    if steps is not None:
      configs.set_field(cfg, "pretrain.steps", steps)
    if cfg.pretrain.steps <= 0:
      raise ValueError("give the number of pre-training steps with --steps N")
    configs.validate_training(cfg)
  except (configs.ConfigError, ValueError) as e:
    cli.bad_input(e)
  if args.distributed:
    import jax
    jax.distributed.initialize()
  train.enable_compilation_cache()
  workdir = Path(args.workdir) if args.workdir else train.default_workdir(cfg, "pretrain")
  try:
    result = train.pretrain(cfg, workdir)
  except (data.DataError, train.TrainingDiverged, ValueError, RuntimeError) as e:
    cli.failure(e)
  print(json.dumps(result, indent=2))
  print(f"encoder saved to {workdir / 'model'}; fine-tune with --init-from {workdir}")


if __name__ == "__main__":
  main()
