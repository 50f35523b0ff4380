"""fp32 vs int8 PTQ vs PTQ + adaptation, on the test split of the task a saved model was trained on.

    python experiments/quantization.py WORKDIR/finetune/model --task rt_polarity --steps 200

Loads a model saved by `python -m embbert_jax.train` (its best params), evaluates it in fp32, after post-training
quantization under each int8 policy (weights fake-quantized exactly as `export` stores them), and after
a short LoRA (r=8, lr 1e-4, the paper's recipe) or straight-through adaptation on the training split.
Prints one Markdown row per variant with its memory under the policy.
"""

from __future__ import annotations

import argparse

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


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("model_dir")
  ap.add_argument("--task", default="rt_polarity")
  ap.add_argument("--steps", type=int, default=200, help="adaptation steps")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  params, cfg, tok_path = export.load_model(args.model_dir)
  task = data.load_task(args.task)
  tok = tok_lib.Tokenizer(tok_path) if tok_path else tok_lib.get_tokenizer(cfg.vocab_size)
  enc = batch_lib.encode_task(task, tok, cfg.max_len)
  enc = batch_lib.trim(enc, batch_lib.auto_seq_len(enc["train"].ids, cfg.max_len))
  model = models.build_model(cfg)
  tcfg = train.get_config()
  loss = lambda p, b, r: losses.classify_loss(model, p, b, r, False)[0]
  train_batches = (b for _, b in batch_lib.train_batches(enc["train"], tcfg.batch_size, args.seed))
  print("| variant | policy | memory | test accuracy | test MCC | test macro-F1 |")
  print("|---|---|---|---|---|---|")

  def row(name, policy, p):
    m = evaluate(model, p, enc["test"])
    print(f"| {name} | {policy} | {memory.format_bytes(memory.total_bytes(cfg, policy))} | "
          f"{m['accuracy']:.4f} | {m['mcc']:.4f} | {m['macro_f1']:.4f} |", flush=True)

  row("fp32", "fp32", params)
  for policy in ("int8", "int8_full"):
    row("PTQ", policy, quantize.fake_quant(params, policy))
    for method in ("lora", "ste"):
      adapted = quantize.adapt(params, loss, train_batches, steps=args.steps, method=method, policy=policy,
                               seed=args.seed)
      # What would be deployed: the adapted params quantized again (identity for ste).
      row(f"PTQ + {method} ({args.steps} steps)", policy, quantize.fake_quant(adapted, policy))


if __name__ == "__main__":
  main()
