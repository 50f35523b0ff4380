"""Arrays the train step eats: encoded task splits, seeded batch orders, NSP pairs and MLM masking.

Everything is pre-tokenized into int32 arrays once, so a batch is a NumPy gather; the order of batches is
a pure function of (seed, epoch), which is what lets a resumed run see exactly the batches an
uninterrupted one would have seen. MLM masking runs inside the jitted step (`mask_tokens`), so the host
only ships ids.

Length bucketing (`train_batches(..., bucket_window=64)`) groups examples of similar length into a batch
and trims it to the shortest width of a small ladder (`length_ladder`: at most `bucket_lengths` multiples of
32, chosen from the training lengths to pad least, and as many of them as pay for their compiles when
priced) that holds its longest example, so short sentences do not pay for the longest one and a run
compiles its step for a few widths only;
`prefetch` assembles and transfers the next batches on a background thread while the device computes.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from embbert_jax.configs import MASK_ID, PAD_ID

BUCKET_LENGTHS = 3  # at most this many batch widths in a bucketed run (length_ladder): one compile each
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
  return width_for(int(example_lengths(ids).max()) if len(ids) else 1, max_len, multiple)


def encode_task(task, tokenizer, max_len: int, add_cls: bool = True) -> dict[str, Arrays]:
  """Every split of a data.TaskData, encoded to length max_len."""
  out = {}
  for name, split in task.splits.items():
    ids = tokenizer.encode_batch(split.text, split.text_pair, max_len=max_len, add_cls=add_cls)
    out[name] = Arrays(ids, np.asarray(split.label))
  return out


def trim(splits: dict[str, Arrays], seq_len: int) -> dict[str, Arrays]:
  return {k: Arrays(v.ids[:, :seq_len], v.labels) for k, v in splits.items()}


def example_lengths(ids_NxL: np.ndarray) -> np.ndarray:
  """Per example, the position after its last non-[PAD] token (0 for an all-[PAD] row)."""
  real = ids_NxL != PAD_ID
  return np.where(real.any(axis=1), ids_NxL.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def width_for(n, full: int, multiple: int = 32):
  """The batch width that holds n tokens without cutting one: n rounded up to `multiple`, at most `full`
  (the arrays' length); an int for an int, an array for an array of lengths."""
  width = np.minimum(full, round_up(np.maximum(n, 1), multiple))
  return int(width) if np.ndim(width) == 0 else width


def length_ladder(lengths: np.ndarray, top: int, multiple: int = 32, max_lengths: int = BUCKET_LENGTHS,
                  cost: Callable[[np.ndarray], np.ndarray] | None = None, passes: float = 1.0,
                  width_cost: float = 0.0, group: int = 1) -> tuple[int, ...]:
  """The batch widths a bucketed run uses: at most `max_lengths` multiples of `multiple` (0: no limit),
  the longest `top` (no example is cut), chosen to pad the fewest tokens when each example is padded to
  the shortest width that holds it (an exact dynamic program over the widths the examples round up to).

  Every width is one more compile of the train step (seconds each), while a rare long batch padded to the
  next width costs a few milliseconds: without a limit amazon's 256-token configs compiled 7 widths, 4 of
  them for fewer than 5 % of the examples.

  With `width_cost` > 0 the number of widths is priced too: of the least-padding ladders of 1, 2, ...
  widths, the one minimising `passes * sum over examples of cost(its width) + width_cost * (widths - 1)`,
  where `cost(widths)` is one example's cost at each width (e.g. the forward FLOPs), `passes` how often
  the run sees each example and `width_cost` the price of one more compile in the same unit; so a short
  run of a small model keeps one width while a long one, or one whose wide batches are dear, buys more.
  A group of `group` members steps at the widest of its members' batches (stack_batches), so a width
  below the top serves a step only when every member's batch fits it: with F the share of examples that
  fit a width, the group steps at most that wide F ** group of the time (members are independent seeds).
  """
  need = width_for(np.asarray(lengths), top, multiple)
  widths, counts = np.unique(np.append(need, top), return_counts=True)
  counts[-1] -= 1  # `top` was added so that it is always a width
  m = len(widths)
  k_max = m if max_lengths <= 0 else min(m, max_lengths)
  if k_max == m and width_cost <= 0:
    return tuple(int(w) for w in widths)
  if k_max == 1:
    return (int(widths[-1]),)
  cum = np.concatenate([[0], np.cumsum(counts)])
  # padded[k][j]: fewest padded tokens of the examples up to widths[j] with k + 1 widths, the last widths[j].
  padded = np.full((k_max, m), np.inf)
  prev = np.zeros((k_max, m), np.int64)
  padded[0] = widths * cum[1:]
  for k in range(1, k_max):
    for j in range(k, m):
      options = padded[k - 1, :j] + widths[j] * (cum[j + 1] - cum[1:j + 1])
      prev[k, j] = int(np.argmin(options))
      padded[k, j] = options[prev[k, j]]

  def ladder(k: int) -> list[int]:  # the least-padding ladder of k + 1 widths (indices into widths)
    chosen, j = [m - 1], m - 1
    while k > 0:
      j = int(prev[k, j])
      chosen.append(j)
      k -= 1
    return sorted(chosen)

  if width_cost <= 0:
    best = ladder(int(np.argmin(padded[:, m - 1])))
  else:
    per = np.asarray(cost(widths) if cost is not None else widths, np.float64)  # one example at each width

    def priced(k: int) -> float:
      idx = ladder(k)  # the share of steps at each width of the ladder: P(the widest member fits it) - ...
      fits = (cum[np.asarray(idx) + 1] / cum[-1]) ** group
      held = cum[-1] * np.diff(np.concatenate([[0.0], fits]))
      return passes * float(per[idx] @ held) + width_cost * k

    best = ladder(min(range(k_max), key=priced))
  return tuple(int(widths[i]) for i in best)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, bucket_window: int = 0,
                  lengths: np.ndarray | None = None) -> list[np.ndarray]:
  """The epoch's batches as index arrays, a pure function of (seed, epoch).

  Both modes use the same examples: the first n // batch_size * batch_size of the seeded permutation
  (the n % batch_size others sit this epoch out). bucket_window = 0 cuts that permutation into batches.
  bucket_window = W sorts each window of W batches by `lengths` (stably, so ties keep the random order),
  cuts it into batches of similar lengths, and shuffles the order of all the epoch's batches with the
  same generator, so the buckets are not visited shortest first.
  """
  rng = np.random.default_rng([seed, epoch])
  per_epoch = n // batch_size
  order = rng.permutation(n)[:per_epoch * batch_size]
  if bucket_window:
    span = bucket_window * batch_size
    order = np.concatenate([w[np.argsort(lengths[w], kind="stable")]
                            for w in np.split(order, range(span, len(order), span))])
  batches = np.split(order, per_epoch)
  if bucket_window:
    batches = [batches[i] for i in rng.permutation(per_epoch)]
  return batches


def train_batches(arrays: Arrays, batch_size: int, seed: int, start_step: int = 0, bucket_window: int = 0,
                  multiple: int = 32, bucket_lengths: int = BUCKET_LENGTHS,
                  ladder: tuple[int, ...] | None = None) -> Iterator[tuple[int, dict]]:
  """(step, batch) from `start_step` on, forever; full batches only.

  Without bucketing every batch has the arrays' length (one compiled shape). With bucket_window > 0
  (batches per length-sorted window, e.g. 64), examples of similar length share a batch and each batch's
  ids are trimmed to the shortest width of `ladder` (default: `length_ladder(..., max_lengths=
  bucket_lengths)`; a given one must rise to `width_for` the longest example) that holds its longest
  example (never cutting a real token), so only the ladder's widths get compiled. Either way step k is
  the same batch whether or not the run was resumed.
  """
  per_epoch = len(arrays) // batch_size
  if per_epoch == 0:
    raise ValueError(f"only {len(arrays)} training examples for batch size {batch_size}")
  lengths = example_lengths(arrays.ids) if bucket_window else None
  full = arrays.ids.shape[1]
  if bucket_window:
    need = lambda n: width_for(n, full, multiple)
    if ladder is None:
      ladder = length_ladder(lengths, need(lengths.max()), multiple, bucket_lengths)
    elif (not ladder or list(ladder) != sorted(set(ladder)) or ladder[0] < 1
          or ladder[-1] != need(lengths.max())):
      raise ValueError(f"a ladder of batch widths must rise strictly to the widest batch, "
                       f"{need(lengths.max())}: not {tuple(ladder)}")
    ladder = np.asarray(ladder)
  step = start_step
  while True:
    epoch, offset = divmod(step, per_epoch)
    for idx in epoch_batches(len(arrays), batch_size, seed, epoch, bucket_window, lengths)[offset:]:
      ids = arrays.ids[idx]
      if bucket_window:
        ids = ids[:, :int(ladder[np.searchsorted(ladder, need(lengths[idx].max()))])]
      yield step, {"ids": ids, "labels": arrays.labels[idx]}
      step += 1


def stack_batches(batches: list[dict]) -> dict:
  """Stacks G batches into one with a leading G axis (one per vmapped group member); ids are padded with
  [PAD] to the longest member's length. Every other entry must have equal shapes across members."""
  length = max(b["ids"].shape[1] for b in batches)
  padded = [b if b["ids"].shape[1] == length else
            {**b, "ids": np.pad(b["ids"], ((0, 0), (0, length - b["ids"].shape[1])), constant_values=PAD_ID)}
            for b in batches]
  return {k: np.stack([b[k] for b in padded]) for k in batches[0]}


def to_device(item: Any, sharding: Any = None) -> Any:
  """jax.device_put of every NumPy array in a pytree; Python scalars (a step number) stay on the host."""
  return jax.tree.map(lambda x: jax.device_put(x, sharding) if isinstance(x, np.ndarray) else x, item)


_DONE = object()


def prefetch(iterator: Iterable, size: int = 2, put: Callable[[Any], Any] = to_device) -> Iterator:
  """Yields put(item) for each item of `iterator`, produced up to `size` items ahead by a thread.

  The thread assembles the next batches and starts their transfer (put) while the device computes the
  current step. An exception in the producer is re-raised at the consumer, at the item where it
  happened. When the consumer stops early (break, close(), or drops the generator) the thread stops
  within about 0.1 s, closing the source iterator; it is a daemon, so it never holds up exit.
  """
  buf: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def offer(entry) -> bool:
    while not stop.is_set():
      try:
        buf.put(entry, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    source = iter(iterator)
    try:
      for item in source:
        if not offer((put(item), None)):
          break
      else:
        offer((_DONE, None))
    except BaseException as e:  # noqa: BLE001 -- handed to the consumer, which re-raises it
      offer((_DONE, e))
    finally:
      if hasattr(source, "close"):
        source.close()

  thread = threading.Thread(target=produce, name="prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item, error = buf.get()
      if error is not None:
        raise error
      if item is _DONE:
        return
      yield item
  finally:
    stop.set()
    thread.join(timeout=1.0)


def eval_batches(arrays: Arrays, batch_size: int, widths: tuple[int, ...] | None = None,
                 multiple: int = 32) -> Iterator[dict]:
  """Fixed-shape batches covering every example once; the tail is padded and weighted 0; "index" names
  each row's example (-1 on padding rows).

  With `widths` (ascending batch widths, e.g. a bucketed run's ladder) the examples go in order of length
  and each batch is trimmed to the narrowest of `widths` or the arrays' length that holds its longest
  example, never cutting a real token: for a model whose outputs do not depend on right padding
  (configs.padding_invariant) the same logits for a fraction of the work, at the widths the run compiled.
  """
  n_all, full = arrays.ids.shape
  order = np.arange(n_all)
  if widths:
    lengths = example_lengths(arrays.ids)
    order = np.argsort(lengths, kind="stable")
    ladder = np.asarray(sorted({int(w) for w in widths if w < full} | {full}))
  for start in range(0, n_all, batch_size):
    index = order[start:start + batch_size]
    ids, labels = arrays.ids[index], arrays.labels[index]
    if widths:
      ids = ids[:, :int(ladder[np.searchsorted(ladder, width_for(int(lengths[index].max()), full, multiple))])]
    n = len(ids)
    weights = np.ones(batch_size, np.float32)
    if n < batch_size:
      ids = np.concatenate([ids, np.zeros((batch_size - n, ids.shape[1]), ids.dtype)])
      labels = np.concatenate([labels, np.zeros(batch_size - n, labels.dtype)])
      index = np.concatenate([index, np.full(batch_size - n, -1)])
      weights[n:] = 0
    yield {"ids": ids, "labels": labels, "weights": weights, "index": index}


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
