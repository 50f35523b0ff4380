"""Why deep EmbBERT without an identity path learns slowly from scratch: three numbers at random init.

    python benchmarks/depth_signal.py                       # headline preset at 1, 2 and 4 layers
    python benchmarks/depth_signal.py --layers 4 6 --task tweets
    python benchmarks/depth_signal.py --layers 4 --init runs/pre   # a pre-trained encoder instead

Per depth N, on the task's training split (init key 0):
* collapse: across-example std / |mean| of the final representation at position 0 (what the head reads)
  and at position 3, over 128 training sentences. Equal ratios: every position holds the same vector;
* gradient RMS of each layer's attention query kernel on one batch of 32 (lone run's loss, dropout on):
  near-uniform attention over collapsed positions gives the later layers' queries almost no gradient;
* linear probe: logistic regression (scikit-learn) on standardised random-init position-0 features of
  4,000 random training sentences, scored on the validation split: how much of the label is readable
  before any training.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from embbert_jax import configs, loop, losses, models, train


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="embbert")
  ap.add_argument("--task", default="rt_polarity")
  ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
  ap.add_argument("--init", default="", help="a pre-training folder: its encoder instead of the random init")
  args = ap.parse_args()
  cfg = train.get_config(args.preset)
  cfg.task = args.task
  _, _, enc = loop.prepare_task(cfg)
  tr, va = enc["train"], enc["validation"]
  perm = np.random.RandomState(0).permutation(len(tr.labels))
  batch = {"ids": jnp.asarray(tr.ids[perm[:32]]), "labels": jnp.asarray(tr.labels[perm[:32]])}
  for n in args.layers:
    m = configs.get_preset(args.preset, num_layers=n)
    params = models.init_params(m, jax.random.key(0))
    if args.init:
      from embbert_jax.programs import load_encoder
      params = {**params, "encoder": load_encoder(args.init, m)}
    encoder, model = models.Encoder(m), models.build_model(m, "classify")
    h = np.asarray(encoder.apply({"params": params["encoder"]}, jnp.asarray(tr.ids[:128])))
    ratio = lambda x: float(x.std(0).mean() / np.abs(x.mean(0)).mean())
    grads = jax.grad(lambda p: losses.classify_loss(model, p, batch, jax.random.key(1), False)[0])(params)
    q = [float(jnp.sqrt(jnp.mean(grads["encoder"][f"layer_{i}"]["attention"]["q"]["kernel"] ** 2)))
         for i in range(n)]
    print(f"N={n}{' (' + args.init + ')' if args.init else ''}: collapse std/|mean| position 0 {ratio(h[:, 0]):.4f}, position 3 {ratio(h[:, 3]):.4f}; "
          f"query-kernel grad RMS per layer {' '.join(f'{g:.1e}' for g in q)}; "
          f"linear probe validation accuracy {probe(encoder, params, tr, va, perm[:4000]):.3f}", flush=True)


def probe(encoder, params, tr, va, idx) -> float:
  from sklearn.linear_model import LogisticRegression
  f = jax.jit(lambda ids: encoder.apply({"params": params["encoder"]}, ids)[:, 0])
  feats = lambda ids: np.concatenate([np.asarray(f(jnp.asarray(ids[i:i + 500]))) for i in range(0, len(ids), 500)])
  x_tr, x_va = feats(tr.ids[idx]), feats(va.ids)
  mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-9
  clf = LogisticRegression(max_iter=3000).fit((x_tr - mu) / sd, tr.labels[idx])
  return float(clf.score((x_va - mu) / sd, va.labels))


if __name__ == "__main__":
  main()
