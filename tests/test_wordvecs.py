"""Token vectors (wordvecs.py, `--init embeddings`): the co-occurrence counts and PPMI are the textbook
quantities, the SVD puts pieces used alike together, a model's token table takes them where they are
defined and nowhere else, they are built once per (tokenizer, corpus) and cached, a damaged shipped table
is a one-line error, and `train` uses them by default with the from-scratch recipe."""

import json

import numpy as np
import pytest

from embbert_jax import configs, inits, programs, train, wordvecs
from embbert_jax import tokenizer as tok_lib
from test_init import _flags
from test_train import tiny_config


def test_cooccurrence_counts_pairs_within_a_sentence_by_inverse_distance():
  c = wordvecs.cooccurrence([[5, 6, 7], [7, 5]], vocab_size=9, window=2).toarray()
  want = np.zeros((9, 9))
  for a, b, w in ((5, 6, 1.0), (6, 7, 1.0), (5, 7, 0.5), (7, 5, 1.0)):  # no pair across the two sentences
    want[a, b] += w
    want[b, a] += w
  np.testing.assert_allclose(c, want)
  assert wordvecs.cooccurrence([[5, 6, 7]], 9, window=1).toarray()[5, 7] == 0


def test_ppmi_is_the_clipped_smoothed_pmi():
  rng = np.random.default_rng(0)
  dense = rng.integers(0, 4, (6, 6)).astype(float)
  dense = dense + dense.T
  import scipy.sparse as sp
  got = wordvecs.ppmi(sp.csr_matrix(dense), alpha=0.75).toarray()
  total = dense.sum()
  ctx = dense.sum(0) ** 0.75
  with np.errstate(divide="ignore"):
    pmi = np.log(dense / total) - np.log(dense.sum(1, keepdims=True) / total) - np.log(ctx / ctx.sum())
  np.testing.assert_allclose(got, np.where(dense > 0, np.maximum(pmi, 0), 0), atol=1e-12)


def _corpus(rng, n=3000):
  """Pieces 10 and 11 occur in the same contexts (10/11 before 20..24), 12 in others (12 before 30..34)."""
  out = []
  for _ in range(n):
    kind = rng.integers(3)
    head = (10, 11, 12)[kind]
    tail = rng.integers(20, 25) if kind < 2 else rng.integers(30, 35)
    out.append([int(rng.integers(40, 50)), head, int(tail), int(rng.integers(40, 50))])
  return out


def test_svd_vectors_put_pieces_used_alike_together_largest_first_and_nested():
  m = wordvecs.ppmi(wordvecs.cooccurrence(_corpus(np.random.default_rng(1)), 50, 2), 0.75)
  vec, sing, seen = wordvecs.svd_vectors(m, 8)
  unit = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
  nearest = lambda i: int(np.argsort(-(unit @ unit[i]))[1])
  assert nearest(10) == 11 and nearest(11) == 10 and nearest(20) in (21, 22, 23, 24)
  assert nearest(30) in (31, 32, 33, 34) and nearest(40) in range(41, 50)
  assert np.all(np.diff(sing) <= 0)
  assert not seen[:10].any() and seen[[10, 11, 12, 20, 30, 40]].all() and not vec[~seen].any()
  np.testing.assert_allclose(vec[seen].std(0), 1.0, rtol=1e-5)
  again, _, _ = wordvecs.svd_vectors(m, 8)
  np.testing.assert_array_equal(vec, again)  # deterministic, signs included
  fewer, _, _ = wordvecs.svd_vectors(m, 4)
  np.testing.assert_allclose(np.abs(fewer), np.abs(vec[:, :4]), atol=1e-3)  # a narrower table: the same leading columns


def test_token_table_replaces_seen_rows_leading_columns_only():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(8, 6)).astype(np.float32)
  vectors = rng.normal(size=(8, 4)).astype(np.float32)
  seen = np.array([0, 0, 0, 0, 0, 1, 1, 0], bool)
  out = wordvecs.token_table(table, vectors, seen)
  np.testing.assert_array_equal(out[5:7, :4], vectors[5:7])
  np.testing.assert_array_equal(out[5:7, 4:], table[5:7, 4:])  # past the vectors' width: random
  np.testing.assert_array_equal(out[~seen], table[~seen])  # special and unseen pieces: random
  narrow = wordvecs.token_table(table[:, :2], vectors, seen)
  np.testing.assert_array_equal(narrow[5:7], vectors[5:7, :2])
  with pytest.raises(wordvecs.VectorsError, match="9 pieces"):
    wordvecs.token_table(table, np.zeros((9, 4), np.float32), np.zeros(9, bool))


def test_find_builds_once_caches_and_init_members_uses_it(tmp_path, monkeypatch):
  cfg = tiny_config(tmp_path)
  path = wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir)
  assert path.is_file() and path.parent == tmp_path / "cache" / "wordvecs"
  vectors, seen, meta = wordvecs.load(path)
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir)
  assert vectors.shape[0] == tok.vocab_size and seen.sum() > 10 and meta["recipe"] == wordvecs.RECIPE
  assert meta["corpus"] == "corpus.txt"
  monkeypatch.setattr(wordvecs, "build", lambda *a, **k: pytest.fail("rebuilt a cached table"))
  assert wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir) == path
  # Members without an encoder take the vectors; a member with one keeps its encoder's table.
  plain = programs.init_members(cfg.model, [0, 1], "classify")
  got = programs.init_members(cfg.model, [0, 1], "classify", None, str(path))
  r = cfg.model.embed_dim
  tables = got["encoder"]["embedder"]["token"]["embedding"]
  for i in (0, 1):
    np.testing.assert_allclose(tables[i][seen, :r], vectors[seen, :r], atol=0)
    np.testing.assert_array_equal(tables[i][~seen], plain["encoder"]["embedder"]["token"]["embedding"][i][~seen])
  np.testing.assert_array_equal(got["encoder"]["layer_0"]["attention"]["q"]["kernel"],
                                plain["encoder"]["layer_0"]["attention"]["q"]["kernel"])  # the rest: random
  mixed = wordvecs.apply(programs.init_members(cfg.model, [0, 1], "classify"), path, [False, True])
  np.testing.assert_array_equal(mixed["encoder"]["embedder"]["token"]["embedding"][0],
                                plain["encoder"]["embedder"]["token"]["embedding"][0])


def test_a_damaged_shipped_table_is_a_one_line_error(tmp_path, monkeypatch):
  cfg = tiny_config(tmp_path)
  built = wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir)
  ship = tmp_path / "ship"
  monkeypatch.setattr(wordvecs, "SHIPPED", ship)
  monkeypatch.setattr(tok_lib, "shipped_tokenizer", lambda v: tok_lib.get_tokenizer(v, cfg.corpus, cfg.cache_dir).model_path)
  monkeypatch.setattr(wordvecs, "find", lambda v, corpus, cache_dir: built)
  index = wordvecs.ship([cfg.model.vocab_size], cfg.cache_dir, command="test")
  entry = index["tables"][str(cfg.model.vocab_size)]
  assert (ship / entry["file"]).read_bytes() == built.read_bytes() and index["recipe"] == wordvecs.RECIPE
  tok_sha = entry["tokenizer_sha256"]
  assert wordvecs._shipped(tok_sha) == ship / entry["file"]
  (ship / entry["file"]).write_bytes(b"damaged")
  with pytest.raises(wordvecs.VectorsError, match="sha256") as e:
    wordvecs._shipped(tok_sha)
  assert "\n" not in str(e.value) and entry["file"] in str(e.value)
  stale = json.loads((ship / "index.json").read_text())
  stale["recipe"] = {**wordvecs.RECIPE, "window": 9}
  (ship / "index.json").write_text(json.dumps(stale))
  assert wordvecs._shipped(tok_sha) is None  # another recipe's table is not used


def test_train_defaults_to_token_vectors_with_the_scratch_recipe_and_records_it(tmp_path, capsys):
  cfg = tiny_config(tmp_path)
  assert inits.resolve(cfg, "auto") == inits.resolve(cfg, "embeddings") == inits.Init("embeddings")
  assert configs.init_fields(inits.Init("embeddings").record()) == {"token_vectors": True}
  train.main(_flags(cfg) + ["--steps", "2", "--workdir", str(tmp_path / "run")])
  out = capsys.readouterr().out
  assert "init: embeddings" in out and "recipe scratch" in out
  result = json.loads((tmp_path / "run" / "finetune" / "result.json").read_text())
  assert result["init"]["kind"] == "embeddings" and result["recipe"] == "scratch"
  assert json.loads((tmp_path / "run" / "finetune" / "config.json").read_text())["token_vectors"] is True


def test_the_package_ships_a_table_for_each_shipped_tokenizer_found_offline(monkeypatch):
  from embbert_jax import data
  monkeypatch.setattr(data, "pretraining_corpus", lambda *a, **k: pytest.fail("built the corpus"))
  monkeypatch.setattr(wordvecs, "build", lambda *a, **k: pytest.fail("built a table"))
  index = wordvecs.shipped_index()
  assert index["recipe"] == wordvecs.RECIPE and "ship vectors" in index["made_by"]
  for v in tok_lib.SHIPPED_VOCABS:
    path = wordvecs.find(v)
    assert path == wordvecs.SHIPPED / f"ppmi{v}.npz"
    vectors, seen, meta = wordvecs.load(path)
    assert vectors.shape == (v, wordvecs.RECIPE["dims"]) and seen.sum() > 0.99 * v - wordvecs.NUM_SPECIAL
    assert meta["tokenizer_sha256"] == index["tables"][str(v)]["tokenizer_sha256"]
    np.testing.assert_allclose(vectors[seen].std(0), 1.0, atol=2e-3)  # fp16 storage of unit-std columns


def test_token_lr_scale_scales_only_the_token_tables_update():
  import jax
  import jax.numpy as jnp
  from embbert_jax import losses
  params = {"encoder": {"embedder": {"token": {"embedding": jnp.ones((4, 3))}, "position": {"embedding": jnp.ones((2, 3))}}},
            "head": {"dense": {"kernel": jnp.ones((3, 2))}}}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)

  def step(scale):
    cfg = train.get_config("nano")
    cfg.token_lr_scale, cfg.learning_rate = scale, 1e-2
    opt = losses.make_optimizer(cfg, total_steps=10)
    updates, _ = opt.update(grads, opt.init(params), params)
    return updates

  full, frozen, half = step(1.0), step(0.0), step(0.5)
  token = lambda u: u["encoder"]["embedder"]["token"]["embedding"]
  assert float(jnp.abs(token(full)).min()) > 0 and not np.asarray(token(frozen)).any()
  np.testing.assert_allclose(token(half), 0.5 * token(full), rtol=1e-6)
  for tree in (frozen, half):  # everything else: the unscaled update
    np.testing.assert_array_equal(tree["head"]["dense"]["kernel"], full["head"]["dense"]["kernel"])
    np.testing.assert_array_equal(tree["encoder"]["embedder"]["position"]["embedding"],
                                  full["encoder"]["embedder"]["position"]["embedding"])


def test_a_frozen_token_table_stays_as_initialised_through_training(tmp_path):
  """token_lr_scale reaches the trainer's compiled optimiser (programs.programs_for keys it), not only
  losses.make_optimizer: with 0 the trained model's token table is its initial one, with 1 it moves."""
  from embbert_jax import artifacts
  tables = {}
  for scale in (0.0, 1.0):
    cfg = tiny_config(tmp_path, steps=4, eval_every=4, token_lr_scale=scale, token_vectors=True,
                      label_columns=False)  # (with them: test_labelcols)
    out = train.train_and_evaluate(cfg, tmp_path / f"s{scale}")
    params, _, _ = artifacts.load_model(tmp_path / f"s{scale}" / "finetune" / "model")
    tables[scale] = params["encoder"]["embedder"]["token"]["embedding"]
    assert out["steps"] == 4
  path = wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir)
  initial = programs.init_members(cfg.model, [cfg.seed], "classify", None, str(path))
  start = initial["encoder"]["embedder"]["token"]["embedding"][0]
  np.testing.assert_array_equal(tables[0.0], start)
  assert np.abs(tables[1.0] - start).max() > 1e-4
