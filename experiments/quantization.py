"""fp32 vs int8 PTQ vs PTQ + adaptation, on the test split of the task a saved model was trained on.

    python experiments/quantization.py WORKDIR/finetune/model --task rt_polarity --steps 200
    python experiments/quantization.py RUN/seed_*/finetune/model OTHER/seed_*/finetune/model --steps 0

With several models (e.g. the seeds of `train --seeds 3` on several tasks) each is evaluated on the task
its run recorded (the run's config.json beside model/; --task otherwise), and the last lines give, per
policy, the paired PTQ - fp32 difference in test accuracy points over the models: mean and a 95 % t
interval. --steps 0 skips the adaptation rows.

Loads a model saved by `python -m embbert_jax.train` (its best params), evaluates it in fp32, after post-training
quantization under each int8 policy (weights fake-quantized exactly as `export` stores them), and after
a short LoRA (r=8, lr 1e-4, the paper's recipe) or straight-through adaptation on the training split.
Prints one Markdown row per variant with its memory under the policy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from embbert_jax import batches as batch_lib
from embbert_jax import data, export, losses, memory, metrics, models, quantize, train
from embbert_jax import tokenizer as tok_lib


def evaluate(model, params, arrays, batch_size=64) -> dict:
  apply = jax.jit(lambda p, ids: model.apply({"params": p}, ids))
  logits = [np.asarray(apply(params, b["ids"]))[b["weights"] > 0]
            for b in batch_lib.eval_batches(arrays, batch_size)]
  return metrics.classification_metrics(arrays.labels, np.concatenate(logits))


def run_task(model_dir: str, default: str) -> str:
  """The task the run that saved `model_dir` trained on (its finetune/config.json), else `default`."""
  cfg_file = Path(model_dir).parent / "config.json"
  if cfg_file.is_file():
    return json.loads(cfg_file.read_text()).get("task") or default
  return default


def paired_interval(diffs: list[float]) -> str:
  """mean [95 % t interval] of paired differences (points)."""
  d = np.asarray(diffs, float)
  if len(d) < 2:
    return f"{d.mean():+.2f} (one model: no interval)"
  from scipy import stats
  half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
  return f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] over {len(d)} models"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("model_dir", nargs="+")
  ap.add_argument("--task", default="rt_polarity", help="the task of a model whose run did not record one")
  ap.add_argument("--steps", type=int, default=200, help="adaptation steps (0: PTQ only)")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  print("| model | task | variant | policy | memory | test accuracy | test MCC | test macro-F1 |")
  print("|---|---|---|---|---|---|---|---|")
  diffs: dict[str, list[float]] = {"int8": [], "int8_full": []}
  for model_dir in args.model_dir:
    task_name = run_task(model_dir, args.task)
    params, cfg, tok_path = export.load_model(model_dir)
    task = data.load_task(task_name)
    tok = tok_lib.Tokenizer(tok_path) if tok_path else tok_lib.get_tokenizer(cfg.vocab_size)
    enc = batch_lib.encode_task(task, tok, cfg.max_len)
    enc = batch_lib.trim(enc, batch_lib.auto_seq_len(enc["train"].ids, cfg.max_len))
    model = models.build_model(cfg)
    tcfg = train.get_config()
    loss = lambda p, b, r: losses.classify_loss(model, p, b, r, False)[0]
    train_batches = (b for _, b in batch_lib.train_batches(enc["train"], tcfg.batch_size, args.seed))

    def row(name, policy, p):
      m = evaluate(model, p, enc["test"])
      print(f"| {model_dir} | {task_name} | {name} | {policy} | "
            f"{memory.format_bytes(memory.total_bytes(cfg, policy))} | "
            f"{m['accuracy']:.4f} | {m['mcc']:.4f} | {m['macro_f1']:.4f} |", flush=True)
      return m["accuracy"]

    base = row("fp32", "fp32", params)
    for policy in ("int8", "int8_full"):
      diffs[policy].append(100 * (row("PTQ", policy, quantize.fake_quant(params, policy)) - base))
      for method in ("lora", "ste") if args.steps > 0 else ():
        adapted = quantize.adapt(params, loss, train_batches, steps=args.steps, method=method, policy=policy,
                                 seed=args.seed)
        # What would be deployed: the adapted params quantized again (identity for ste).
        row(f"PTQ + {method} ({args.steps} steps)", policy, quantize.fake_quant(adapted, policy))
  for policy, d in diffs.items():
    print(f"PTQ {policy} - fp32, test accuracy points: {paired_interval(d)}")


if __name__ == "__main__":
  main()
