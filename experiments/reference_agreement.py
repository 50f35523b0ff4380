"""Export a saved model under each int8 policy and check the NumPy reference against the JAX model.

    python experiments/reference_agreement.py WORKDIR/finetune/model --task rt_polarity --n 200

For each policy: exported weight bytes vs the memory module, the fraction of the first N test sentences
where the NumPy int8 reference (reading only the export) predicts the JAX model's label (float params),
and the reference's peak live activation bytes vs the memory module's activation estimate.
"""

from __future__ import annotations

import argparse
import tempfile

from embbert_jax import batches as batch_lib
from embbert_jax import data, export, memory, reference
from embbert_jax import tokenizer as tok_lib


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("model_dir")
  ap.add_argument("--task", default="rt_polarity")
  ap.add_argument("--n", type=int, default=200)
  args = ap.parse_args()
  params, cfg, tok_path = export.load_model(args.model_dir)
  tok = tok_lib.Tokenizer(tok_path) if tok_path else tok_lib.get_tokenizer(cfg.vocab_size)
  ids = batch_lib.encode_task(data.load_task(args.task), tok, cfg.max_len)["test"].ids[:args.n]
  print("| policy | exported weight bytes | memory module | agreement | reference peak activations | estimate |")
  print("|---|---|---|---|---|---|")
  for policy in ("int8", "int8_full"):
    with tempfile.TemporaryDirectory() as out:
      manifest = export.export(params, cfg, out, policy=policy, tokenizer_path=tok_path)
      est = memory.estimate(cfg, policy)
      agree = reference.agreement(out, params, cfg, ids)
      prof = reference.memory_profile(out)
      print(f"| {policy} | {manifest['weight_bytes']:,} | {est.weight_bytes:,} | {agree:.3f} | "
            f"{prof['live_peak_bytes']:,} | {est.activation_bytes:,} |", flush=True)


if __name__ == "__main__":
  main()
