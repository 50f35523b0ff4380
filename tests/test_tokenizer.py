"""Tests of embbert_jax.tokenizer on a ~100-piece BPE model trained on a corpus generated here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embbert_jax import tokenizer as tk

VOCAB = 100


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  rng = np.random.default_rng(0)
  words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park", "cafe", "deja", "vu", "happy",
           "sad", "movie", "great", "bad", "plot", "actor", "scene", "is", "was", "and", "but", "very"]
  docs = []
  for _ in range(40):
    sentences = [" ".join(rng.choice(words, size=rng.integers(3, 12))).capitalize() + "." for _ in range(10)]
    docs.append("\n".join(sentences))
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tok(corpus, cache):
  return tk.get_tokenizer(VOCAB, corpus_path=corpus, cache_dir=cache)


def test_special_ids_and_vocab(tok):
  assert (tk.PAD_ID, tk.UNK_ID, tk.CLS_ID, tk.MASK_ID, tk.SEP_ID) == (0, 1, 2, 3, 4)
  assert [tok.id_to_piece(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[SEP]"]
  assert tok.vocab_size == VOCAB == len(tok)


def test_specials_never_come_from_text(tok):
  ids = tok.tokenize(["[SEP] [CLS] [MASK] [PAD] the cat"])[0]
  assert not set(ids) & {tk.PAD_ID, tk.CLS_ID, tk.MASK_ID, tk.SEP_ID}


def test_lowercase_and_accent_stripping(tok):
  a, b = tok.tokenize(["The CAFÉ   Déjà-Vu", "the cafe deja-vu"])
  assert a == b
  np.testing.assert_array_equal(tok.encode_batch(["ÀCTOR"], max_len=8),
                                tok.encode_batch(["actor"], max_len=8))


def test_single_template_padding_and_truncation(tok):
  texts = ["the cat sat on a mat", "dog", ""]
  pieces = tok.tokenize(texts)
  ids = tok.encode_batch(texts, max_len=10)
  assert ids.dtype == np.int32 and ids.shape == (3, 10)
  for row, p in zip(ids, pieces):
    expect = ([tk.CLS_ID] + p)[:10]
    assert row.tolist() == expect + [0] * (10 - len(expect))
  short = tok.encode_batch(texts[:1], max_len=4)[0].tolist()
  assert short == [tk.CLS_ID] + pieces[0][:3]
  no_cls = tok.encode_batch(texts[:1], max_len=4, add_cls=False)[0].tolist()
  assert no_cls == pieces[0][:4]


def test_pair_template_exact(tok):
  a, b = "the cat sat", "a dog ran to the park"
  pa, pb = tok.tokenize([a, b])
  row = tok.encode_batch([a], [b], max_len=40)[0].tolist()
  body = [tk.CLS_ID, *pa, tk.SEP_ID, *pb, tk.SEP_ID]
  assert row == body + [0] * (40 - len(body))
  row = tok.encode_batch([a], [b], max_len=40, add_cls=False)[0].tolist()
  body = [*pa, tk.SEP_ID, *pb, tk.SEP_ID]
  assert row == body + [0] * (40 - len(body))


def _simulate_longest_first(la: int, lb: int, budget: int) -> tuple[int, int]:
  while la + lb > budget:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return la, lb


def test_truncation_matches_longest_first_loop():
  cases = list(itertools.product(range(13), range(13), range(0, 20)))
  la, lb, budget = (np.array(x) for x in zip(*cases))
  for bud in np.unique(budget):
    sel = budget == bud
    ta, tb = tk._truncate_longest_first(la[sel], lb[sel], int(bud))
    expect = [_simulate_longest_first(x, y, int(bud)) for x, y in zip(la[sel], lb[sel])]
    assert list(zip(ta.tolist(), tb.tolist())) == expect


def test_pair_truncation_keeps_both_seps(tok):
  a = "the cat sat on a mat and the dog ran to the park"
  b = "very happy"
  pa, pb = tok.tokenize([a, b])
  L = 3 + len(pb) + 3  # room for all of B and 3 pieces of A
  row = tok.encode_batch([a], [b], max_len=L)[0].tolist()
  ta, tb = _simulate_longest_first(len(pa), len(pb), L - 3)
  assert row == [tk.CLS_ID, *pa[:ta], tk.SEP_ID, *pb[:tb], tk.SEP_ID]
  rows = tok.encode_batch([a, "dog"], [a, a], max_len=9)
  assert (rows == tk.SEP_ID).sum(axis=1).tolist() == [2, 2] and rows[:, 0].tolist() == [tk.CLS_ID] * 2
  assert rows[0].tolist()[-1] == tk.SEP_ID


def test_batch_equals_one_by_one(tok):
  texts = ["the cat sat", "a very very sad movie but great actor", "dog", "scene"]
  pairs = ["plot", "", "the park", "is bad and was sad"]
  batch = tok.encode_batch(texts, pairs, max_len=12)
  for i in range(len(texts)):
    np.testing.assert_array_equal(batch[i], tok.encode_batch([texts[i]], [pairs[i]], max_len=12)[0])


def test_edge_cases(tok):
  assert tok.encode_batch([], max_len=8).shape == (0, 8)
  with pytest.raises(ValueError):
    tok.encode_batch(["a"], ["b"], max_len=2)
  with pytest.raises(ValueError):
    tok.encode_batch(["a", "b"], ["c"], max_len=8)
  assert tok.decode(tok.encode_batch(["The Cat"], max_len=6)[0]) == "the cat"


def test_pickles_by_model_path(tok):
  import pickle

  clone = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(clone.encode_batch(["the cat"], max_len=6), tok.encode_batch(["the cat"], max_len=6))


def test_cached_model_is_reused(corpus, cache, tok, monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError("retrained despite a cached model")

  monkeypatch.setattr(tk, "train_tokenizer", boom)
  again = tk.get_tokenizer(VOCAB, corpus_path=corpus, cache_dir=cache)
  assert again.model_path == tok.model_path
  with pytest.raises(AssertionError):
    tk.get_tokenizer(VOCAB + 20, corpus_path=corpus, cache_dir=cache)  # other size: new model needed


def test_training_is_deterministic(corpus, tmp_path, tok):
  retrained = tk.Tokenizer(tk.train_tokenizer(corpus, VOCAB, tmp_path / "spm"))
  assert [retrained.id_to_piece(i) for i in range(VOCAB)] == [tok.id_to_piece(i) for i in range(VOCAB)]
