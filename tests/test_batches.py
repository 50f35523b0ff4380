"""Batch assembly: length bucketing, resume-exact batch order, stacking group members' batches, prefetch."""

import itertools
import threading
import time

import numpy as np
import pytest

from embbert_jax import batches
from embbert_jax.configs import CLS_ID, PAD_ID


def arrays(n=1000, max_len=256, seed=0):
  """Example i has a distinctive label i and a skewed length (many short, a few up to max_len)."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.geometric(1 / 30, n), 2, max_len)
  ids = rng.integers(5, 100, (n, max_len)).astype(np.int32)
  ids[:, 0] = CLS_ID
  ids[np.arange(max_len)[None, :] >= lengths[:, None]] = PAD_ID
  return batches.Arrays(ids, np.arange(n, dtype=np.int32)), lengths


def take(it, k):
  return list(itertools.islice(it, k))


def test_example_lengths_and_auto_seq_len():
  ids = np.array([[CLS_ID, 7, 8, PAD_ID], [CLS_ID, PAD_ID, PAD_ID, PAD_ID], [PAD_ID] * 4, [CLS_ID, 5, 6, 7]])
  np.testing.assert_array_equal(batches.example_lengths(ids), [3, 1, 0, 4])
  assert batches.auto_seq_len(ids, max_len=256, multiple=3) == 6
  assert batches.auto_seq_len(ids, max_len=5, multiple=32) == 5


@pytest.mark.parametrize("window", [0, 4, 64])
def test_an_epoch_sees_the_unbucketed_epochs_examples_once(window):
  arr, _ = arrays()
  per_epoch = len(arr) // 32
  for start in (0, per_epoch):
    got = [b["labels"] for _, b in take(batches.train_batches(arr, 32, 5, start, window), per_epoch)]
    plain = [b["labels"] for _, b in take(batches.train_batches(arr, 32, 5, start), per_epoch)]
    seen = np.concatenate(got)
    assert len(np.unique(seen)) == len(seen) == per_epoch * 32  # each example at most once ...
    np.testing.assert_array_equal(np.sort(seen), np.sort(np.concatenate(plain)))  # ... the same ones
    assert all(len(b) == 32 for b in got)


@pytest.mark.parametrize("limit", [0, 3])
def test_buckets_group_similar_lengths_and_trim_without_cutting_tokens(limit):
  arr, lengths = arrays()
  got = take(batches.train_batches(arr, 32, 0, bucket_window=8, bucket_lengths=limit), 2 * (len(arr) // 32))
  ladder = batches.length_ladder(lengths, 256, 32, limit)
  assert len(ladder) == (3 if limit else 8)  # lengths reach 256: every multiple of 32 occurs
  spreads, plain_spreads = [], []
  for _, b in got:
    n = lengths[b["labels"]]
    width = b["ids"].shape[1]
    # trimmed to the shortest width of the ladder that holds the longest example (rounded up to 32)
    assert width == min(w for w in ladder if w >= -(-n.max() // 32) * 32)
    np.testing.assert_array_equal(b["ids"], arr.ids[b["labels"], :width])
    assert (arr.ids[b["labels"], width:] == PAD_ID).all()  # nothing real was cut
    spreads.append(n.max() - n.min())
  for _, b in take(batches.train_batches(arr, 32, 0), len(got)):
    assert b["ids"].shape[1] == 256
    n = lengths[b["labels"]]
    plain_spreads.append(n.max() - n.min())
  assert np.median(spreads) * 5 < np.median(plain_spreads)
  assert {b["ids"].shape[1] for _, b in got} <= set(ladder)  # few shapes, few compilations
  # Bucketed batches are not visited in length order.
  widths = [b["ids"].shape[1] for _, b in got[:len(arr) // 32]]
  assert widths != sorted(widths)


def padded_tokens(lengths, ladder, multiple=32):
  need = np.maximum(-(-lengths // multiple) * multiple, multiple)
  return sum(min(w for w in ladder if w >= n) for n in need)


@pytest.mark.parametrize("seed", range(6))
def test_length_ladder_pads_least_among_ladders_of_that_size(seed):
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.geometric(1 / rng.uniform(10, 60), 300), 1, 200)
  top = -(-lengths.max() // 32) * 32
  widths = sorted({int(w) for w in np.maximum(-(-lengths // 32) * 32, 32)})
  for k in (1, 2, 3):
    ladder = batches.length_ladder(lengths, top, 32, k)
    assert len(ladder) == min(k, len(widths)) and ladder[-1] == top and list(ladder) == sorted(ladder)
    # brute force over every ladder of k widths that ends at the top
    best = min(padded_tokens(lengths, (*rest, top))
               for rest in itertools.combinations([w for w in widths if w < top], min(k, len(widths)) - 1))
    assert padded_tokens(lengths, ladder) == best
  assert batches.length_ladder(lengths, top, 32, 0) == tuple(widths)  # no limit: every width that occurs
  assert batches.length_ladder([3, 5], 16, 32, 3) == (16,)  # a run shorter than one multiple


@pytest.mark.parametrize("seed", range(4))
def test_a_priced_ladder_is_the_cheapest_least_padding_ladder_counting_its_compiles(seed):
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.geometric(1 / rng.uniform(10, 60), 300), 1, 256)
  top = -(-lengths.max() // 32) * 32
  cost = lambda w: 1e-3 * np.asarray(w, float) ** 2  # attention-like: wide examples are dear
  unpriced = {k: batches.length_ladder(lengths, top, 32, k) for k in (1, 2, 3)}
  assert batches.length_ladder(lengths, top, 32, 3, cost, 5.0, 0.0) == unpriced[3]  # no price: as before

  def total(ladder, passes, price):  # brute force: every example at the narrowest width that holds it
    need = np.maximum(-(-lengths // 32) * 32, 32)
    return passes * sum(cost(min(w for w in ladder if w >= n)) for n in need) + price * (len(ladder) - 1)

  for passes, price in [(1.0, 1e9), (1.0, 1.0), (50.0, 30.0), (500.0, 1.0), (1e-3, 5.0)]:
    got = batches.length_ladder(lengths, top, 32, 3, cost, passes, price)
    assert got in unpriced.values()  # one of the least-padding ladders; their number is what is priced
    assert total(got, passes, price) == pytest.approx(min(total(l, passes, price) for l in unpriced.values()))
  assert batches.length_ladder(lengths, top, 32, 3, cost, 1.0, 1e9) == (top,)  # dear compiles: one width
  assert batches.length_ladder(lengths, top, 32, 3, cost, 1e6, 1.0) == unpriced[3]  # a long run buys all
  assert batches.length_ladder(lengths, top, 32, 0, cost, 1.0, 1e9) == (top,)  # no limit, priced
  every = batches.length_ladder(lengths, top, 32, 0)  # every width that occurs
  assert batches.length_ladder(lengths, top, 32, 0, cost, 1e6, 1.0) == every  # a long run, no limit


def test_a_group_prices_a_narrow_width_by_how_often_every_member_fits_it():
  lengths = np.array([10] * 60 + [100] * 40)  # 60 % fit 32
  cost = lambda w: np.asarray(w, float)  # tokens
  # solo: the width 32 saves 60 examples x (128 - 32) tokens per pass; a group of 8 steps at 32 only
  # 0.6 ** 8 = 1.7 % of the time, so the same price buys it for one member and not for eight
  saving = lambda g: 100 * 0.6 ** g * (128 - 32)
  price = 0.5 * saving(1)
  assert batches.length_ladder(lengths, 128, 32, 3, cost, 1.0, price, group=1) == (32, 128)
  assert batches.length_ladder(lengths, 128, 32, 3, cost, 1.0, price, group=8) == (128,)
  assert batches.length_ladder(lengths, 128, 32, 3, cost, 1.0, 0.5 * saving(8), group=8) == (32, 128)


def test_a_priced_ladder_with_one_possible_width_never_prices_it():
  def cost(_):
    raise AssertionError("priced a ladder that has one possible width")
  assert batches.length_ladder([3, 20, 31], 32, 32, 3, cost, 1.0, 5.0) == (32,)
  assert batches.length_ladder([3, 200], 256, 32, 1, cost, 1.0, 5.0) == (256,)


@pytest.mark.parametrize("ladder", [(), (64, 32, 256), (32, 64), (32, 32, 256), (0, 256)])
def test_a_given_ladder_must_rise_to_the_widest_batch(ladder):
  arr, _ = arrays()
  with pytest.raises(ValueError, match="must rise strictly to the widest batch"):
    next(batches.train_batches(arr, 32, 0, bucket_window=8, ladder=ladder))


@pytest.mark.parametrize("window", [0, 8])
@pytest.mark.parametrize("start", [1, 30, 31, 45])
def test_resumed_steps_equal_uninterrupted_ones(window, start):
  arr, _ = arrays(n=1000)  # 31 batches per epoch: resumes inside the first and second epoch
  full = take(batches.train_batches(arr, 32, 7, 0, window), 70)
  resumed = take(batches.train_batches(arr, 32, 7, start, window), 70 - start)
  for (s, a), (t, b) in zip(full[start:], resumed, strict=True):
    assert s == t
    np.testing.assert_array_equal(a["ids"], b["ids"])
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_order_is_deterministic_per_seed_and_changes_across_seeds_and_epochs():
  arr, _ = arrays()
  labels = lambda seed, start=0: np.concatenate([b["labels"] for _, b in
                                                  take(batches.train_batches(arr, 32, seed, start, 8), 10)])
  np.testing.assert_array_equal(labels(1), labels(1))
  assert not np.array_equal(labels(1), labels(2))
  assert not np.array_equal(labels(1), labels(1, start=len(arr) // 32))  # the next epoch reshuffles


def test_stack_batches_pads_ids_to_the_longest_member():
  arr, _ = arrays(n=256)
  members = [next(batches.train_batches(arr, 16, seed, bucket_window=4))[1] for seed in range(5)]
  widths = [m["ids"].shape[1] for m in members]
  assert len(set(widths)) > 1
  stacked = batches.stack_batches(members)
  assert stacked["ids"].shape == (5, 16, max(widths)) and stacked["labels"].shape == (5, 16)
  for g, m in enumerate(members):
    np.testing.assert_array_equal(stacked["ids"][g, :, :widths[g]], m["ids"])
    assert (stacked["ids"][g, :, widths[g]:] == PAD_ID).all()
    np.testing.assert_array_equal(stacked["labels"][g], m["labels"])


def test_prefetch_yields_the_same_sequence_on_device():
  arr, _ = arrays(n=200)
  want = take(batches.train_batches(arr, 16, 3, bucket_window=4), 20)
  got = take(batches.prefetch(batches.train_batches(arr, 16, 3, bucket_window=4), size=3), 20)
  for (s, a), (t, b) in zip(want, got, strict=True):
    assert s == t and isinstance(t, int)  # Python scalars stay on the host
    assert not isinstance(b["ids"], np.ndarray)  # arrays went to the device
    np.testing.assert_array_equal(a["ids"], np.asarray(b["ids"]))
  assert list(batches.prefetch(iter(range(5)), put=lambda x: x * 2)) == [0, 2, 4, 6, 8]


def test_prefetch_reraises_producer_errors_in_order():
  def source():
    yield 1
    yield 2
    raise KeyError("bad example")

  it = batches.prefetch(source(), size=1, put=lambda x: x)
  assert next(it) == 1 and next(it) == 2
  with pytest.raises(KeyError, match="bad example"):
    next(it)


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "prefetch" and t.is_alive()]


@pytest.mark.parametrize("how", ["break", "close", "drop"])
def test_abandoned_prefetch_stops_its_thread_and_closes_the_source(how):
  closed = threading.Event()

  def forever():
    try:
      for i in itertools.count():
        yield i
    finally:
      closed.set()

  def first_items():
    for i in batches.prefetch(forever(), size=2, put=lambda x: x):
      if i == 3:
        return i  # the generator is dropped here

  before = len(_prefetch_threads())
  if how == "break":
    assert first_items() == 3
  else:
    it = batches.prefetch(forever(), size=2, put=lambda x: x)
    next(it)
    if how == "close":
      it.close()
    else:
      del it  # collected by refcounting: the generator's finally runs
  assert closed.wait(5.0), "the source iterator was not closed"
  deadline = time.monotonic() + 5.0
  while len(_prefetch_threads()) > before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert len(_prefetch_threads()) == before


def test_slow_consumer_bounds_the_queue():
  produced = []

  def source():
    for i in range(100):
      produced.append(i)
      yield i

  it = batches.prefetch(source(), size=2, put=lambda x: x)
  next(it)
  time.sleep(0.3)
  assert len(produced) <= 1 + 2 + 1  # the consumed item, the queue, one waiting to be put
  it.close()


@pytest.mark.parametrize("widths", [None, (64, 256), (32, 96)])
def test_eval_batches_cover_every_example_once_at_the_narrowest_width_that_holds_it(widths):
  arr, lengths = arrays(n=203, max_len=128)
  got = list(batches.eval_batches(arr, 32, widths))
  index = np.concatenate([b["index"] for b in got])
  real = index >= 0
  np.testing.assert_array_equal(np.sort(index[real]), np.arange(203))  # each example exactly once
  np.testing.assert_array_equal(real, np.concatenate([b["weights"] for b in got]) > 0)
  assert (~real).sum() == 32 * 7 - 203 and not real[-(~real).sum():].any()  # padding rows only at the end
  for b in got:
    rows = b["index"] >= 0
    np.testing.assert_array_equal(b["labels"][rows], arr.labels[b["index"][rows]])
    width = b["ids"].shape[1]
    np.testing.assert_array_equal(b["ids"][rows], arr.ids[b["index"][rows], :width])  # no real token cut
    if widths is None:  # the arrays' order and length, as before bucketing
      assert width == 128
    else:  # the narrowest of the widths (below the arrays' 128) or 128 that holds the batch's longest
      need = -(-lengths[b["index"][rows]].max() // 32) * 32
      assert width == min(w for w in [w for w in widths if w < 128] + [128] if w >= need)
  if widths is None:
    np.testing.assert_array_equal(index[real], np.arange(203))
  else:
    assert len({b["ids"].shape[1] for b in got}) > 1
