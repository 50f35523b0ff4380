"""Arrays the train step eats: encoded task splits, seeded batch orders, NSP pairs and MLM masking.

Everything is pre-tokenized into int32 arrays once, so a batch is a NumPy gather; the order of batches is
a pure function of (seed, epoch), which is what lets a resumed run see exactly the batches an
uninterrupted one would have seen. MLM masking runs inside the jitted step (`mask_tokens`), so the host
only ships ids.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from embbert_jax.configs import MASK_ID, PAD_ID

N_SPECIAL = 5  # ids 0..4 are [PAD] [UNK] [CLS] [MASK] [SEP]; random replacements never draw them


@dataclasses.dataclass
class Arrays:
  """One split: ids (n, L) int32 and labels (n,) int32 (or float32 for regression)."""
  ids: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.ids)


def auto_seq_len(ids: np.ndarray, max_len: int, multiple: int = 32) -> int:
  """The longest example rounded up to `multiple`, at most max_len.

  Outputs at real positions do not depend on padding (tests check this), so training at this length
  gives the same numbers as at L, without paying for the empty tail.
  """
  longest = int((ids != PAD_ID).sum(axis=1).max()) if len(ids) else 1
  return int(min(max_len, -(-longest // multiple) * multiple))


def encode_task(task, tokenizer, max_len: int, add_cls: bool = True) -> dict[str, Arrays]:
  """Every split of a data.TaskData, encoded to length max_len."""
  out = {}
  for name, split in task.splits.items():
    ids = tokenizer.encode_batch(split.text, split.text_pair, max_len=max_len, add_cls=add_cls)
    out[name] = Arrays(ids, np.asarray(split.label))
  return out


def trim(splits: dict[str, Arrays], seq_len: int) -> dict[str, Arrays]:
  return {k: Arrays(v.ids[:, :seq_len], v.labels) for k, v in splits.items()}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(arrays: Arrays, batch_size: int, seed: int, start_step: int = 0) -> Iterator[tuple[int, dict]]:
  """(step, batch) from `start_step` on, forever; full batches only (one compiled shape)."""
  per_epoch = len(arrays) // batch_size
  if per_epoch == 0:
    raise ValueError(f"only {len(arrays)} training examples for batch size {batch_size}")
  step = start_step
  while True:
    epoch, offset = divmod(step, per_epoch)
    order = epoch_order(len(arrays), seed, epoch)
    for i in range(offset, per_epoch):
      idx = order[i * batch_size:(i + 1) * batch_size]
      yield step, {"ids": arrays.ids[idx], "labels": arrays.labels[idx]}
      step += 1


def eval_batches(arrays: Arrays, batch_size: int) -> Iterator[dict]:
  """Fixed-shape batches covering every example once; the tail is padded and weighted 0."""
  for start in range(0, len(arrays), batch_size):
    ids = arrays.ids[start:start + batch_size]
    labels = arrays.labels[start:start + batch_size]
    n = len(ids)
    weights = np.ones(batch_size, np.float32)
    if n < batch_size:
      ids = np.concatenate([ids, np.zeros((batch_size - n, ids.shape[1]), ids.dtype)])
      labels = np.concatenate([labels, np.zeros(batch_size - n, labels.dtype)])
      weights[n:] = 0
    yield {"ids": ids, "labels": labels, "weights": weights}


# ---------------------------------------------------------------------------------------- pre-training


def nsp_pairs(documents: list[list[str]], seed: int = 0) -> tuple[list[str], list[str], np.ndarray]:
  """Spec 4: every (s_i, s_i+1) in a document labelled 0 ("next"), plus as many with a random first
  sentence labelled 1 ("not next")."""
  rng = np.random.default_rng(seed)
  first, second = [], []
  for doc in documents:
    for a, b in zip(doc[:-1], doc[1:]):
      first.append(a)
      second.append(b)
  pool = [s for doc in documents for s in doc]
  randoms = [pool[i] for i in rng.integers(0, len(pool), len(first))]
  labels = np.concatenate([np.zeros(len(first), np.int32), np.ones(len(first), np.int32)])
  return first + randoms, second + second, labels


def pretraining_arrays(documents, tokenizer, max_len: int, seed: int = 0) -> Arrays:
  a, b, labels = nsp_pairs(documents, seed)
  return Arrays(tokenizer.encode_batch(a, b, max_len=max_len), labels)


def max_predictions(seq_len: int, rate: float) -> int:
  """Masked positions scored per sequence: the expected count plus 4 standard deviations (so the cap,
  BERT's max_predictions_per_seq, binds for a negligible share of sequences)."""
  mean = seq_len * rate
  return int(min(seq_len, math.ceil(mean + 4 * math.sqrt(mean * (1 - rate)) + 1)))


def mask_tokens(rng: jax.Array, ids_BxL: jax.Array, vocab_size: int, rate: float = 0.15,
                max_preds: int | None = None):
  """BERT masking: `rate` of the non-special tokens are targets; of those 80 % -> [MASK], 10 % a random
  token, 10 % unchanged.

  Returns (inputs, positions_BxP, targets_BxP, weights_BxP): the P = max_preds target positions of each
  sequence (padded with weight 0), so the MLM head runs at those positions only. A sequence with more
  picks than P keeps P of them at random; the rest stay unmasked inputs and are not scored.
  """
  length = ids_BxL.shape[1]
  max_preds = max_preds or max_predictions(length, rate)
  k_pick, k_kind, k_rand, k_order = jax.random.split(rng, 4)
  maskable = ids_BxL >= N_SPECIAL
  picked = maskable & (jax.random.uniform(k_pick, ids_BxL.shape) < rate)
  order = jnp.where(picked, jax.random.uniform(k_order, ids_BxL.shape), -1.0)
  top, positions = jax.lax.top_k(order, max_preds)
  weights = (top >= 0).astype(jnp.float32)
  chosen = jnp.zeros(ids_BxL.shape, bool).at[jnp.arange(ids_BxL.shape[0])[:, None], positions].max(top >= 0)
  kind = jax.random.uniform(k_kind, ids_BxL.shape)
  random_ids = jax.random.randint(k_rand, ids_BxL.shape, N_SPECIAL, vocab_size, dtype=ids_BxL.dtype)
  inputs = jnp.where(chosen & (kind < 0.8), MASK_ID, ids_BxL)
  inputs = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
  targets = jnp.take_along_axis(ids_BxL, positions, 1)
  return inputs, positions, targets, weights
