"""Label columns (labelcols.py): the linear model is scikit-learn's TF-IDF + logistic regression written out
(checked against it where installed, and ridge against its closed form), its columns go into the last
columns of the token table of the members that take token vectors and nowhere else, and a training run
starts from them by default and keeps them in its record."""

import json

import numpy as np
import pytest

from embbert_jax import labelcols, loop, programs, train, wordvecs
from test_train import tiny_config


def _ids(rng, n=60, length=12, vocab=40):
  ids = rng.integers(labelcols.NUM_SPECIAL, vocab, size=(n, length)).astype(np.int32)
  ids[:, 0] = 2  # [CLS]: not a feature
  ids[rng.random((n, length)) < 0.3] = 0  # padding: not a feature
  return ids


def test_tfidf_and_the_linear_models_are_sklearns_defaults():
  sk_text = pytest.importorskip("sklearn.feature_extraction.text")
  sk_lin = pytest.importorskip("sklearn.linear_model")
  rng = np.random.default_rng(0)
  ids = _ids(rng)
  x, present, idf = labelcols.tfidf(ids, 40)
  counts = np.zeros((len(ids), 40))
  for i, row in enumerate(ids):
    for t in row[row >= labelcols.NUM_SPECIAL]:
      counts[i, t] += 1
  np.testing.assert_allclose(x.toarray(), sk_text.TfidfTransformer().fit_transform(counts).toarray(), atol=1e-12)
  assert not present[:labelcols.NUM_SPECIAL].any() and present.sum() == (counts.sum(0) > 0).sum()
  other = _ids(rng, n=7)  # other texts under these texts' idf: sklearn's transform after its fit
  other_counts = np.stack([np.bincount(r[r >= labelcols.NUM_SPECIAL], minlength=40) for r in other])
  np.testing.assert_allclose(labelcols.tfidf(other, 40, idf)[0].toarray(),
                             sk_text.TfidfTransformer().fit(counts).transform(other_counts).toarray(), atol=1e-12)
  for classes in (2, 3):
    y = rng.integers(0, classes, len(ids))
    ref = sk_lin.LogisticRegression(tol=1e-10, max_iter=10000).fit(x, y).coef_
    ref = ref.T if classes > 2 else ref[0][:, None]
    got = labelcols.fit_linear(x, y, classes)
    assert got.shape == (40, 1 if classes == 2 else classes)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_ridge_for_regression_is_the_closed_form():
  rng = np.random.default_rng(1)
  x, _, _ = labelcols.tfidf(_ids(rng), 40)
  y = rng.normal(size=x.shape[0])
  got = labelcols.fit_linear(x, y, 1, is_regression=True)[:, 0]
  a = np.hstack([x.toarray(), np.ones((x.shape[0], 1))])  # the intercept, unpenalised
  reg = np.diag([1.0] * 40 + [0.0])
  want = np.linalg.solve(a.T @ a + reg, a.T @ y)[:40]
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_columns_carry_the_label_evidence_at_unit_scale_and_zero_for_unseen_pieces():
  rng = np.random.default_rng(2)
  ids = _ids(rng, n=80, vocab=30)
  y = rng.integers(0, 2, len(ids))
  ids[y == 1, 1] = 31  # a piece only the positive texts have
  ids[y == 0, 1] = 32  # and one only the negative texts have
  cols = labelcols.columns(ids, y, 40, 2)
  present = labelcols.tfidf(ids, 40)[1]
  assert cols.shape == (40, 1) and cols.dtype == np.float32
  assert cols[31, 0] > 1.0 and cols[32, 0] < -1.0  # the strongest evidence, either sign
  assert np.all(cols[~present] == 0) and abs(cols[present, 0].std() - 1.0) < 1e-5
  x, _, idf = labelcols.tfidf(ids, 40)  # each piece's weight times its idf, up to the one scale
  bare = labelcols.fit_linear(x, y, 2)[present, 0]
  want = bare * idf[present]
  np.testing.assert_allclose(cols[present, 0], want / want.std(), rtol=1e-4, atol=1e-5)
  assert not np.allclose(cols[present, 0], bare / bare.std(), atol=1e-2)  # not the bare weights


def test_apply_writes_the_last_columns_of_the_flagged_members_only():
  table = np.arange(2 * 10 * 8, dtype=np.float32).reshape(2, 10, 8)
  params = {"encoder": {"embedder": {"token": {"embedding": table.copy()}}}}
  cols = np.full((10, 2), -1.0, np.float32)
  out = labelcols.apply(params, labelcols.Fit(cols), [False, True])["encoder"]["embedder"]["token"]["embedding"]
  np.testing.assert_array_equal(out[0], table[0])
  np.testing.assert_array_equal(out[1, :, :6], table[1, :, :6])
  np.testing.assert_array_equal(out[1, :, 6:], cols)
  narrow = {"encoder": {"embedder": {"token": {"embedding": table[:, :, :3].copy()}}}}
  out = labelcols.apply(narrow, labelcols.Fit(cols), None)["encoder"]["embedder"]["token"]["embedding"]
  np.testing.assert_array_equal(out, table[:, :, :3])  # two columns would take more than half of three


def test_a_run_starts_from_them_by_default_and_the_switch_turns_them_off(tmp_path, capsys):
  """A frozen token table (token_lr_scale 0) ends as it started: with label columns (the default) that is
  the token vectors plus the linear model's column, fitted once per training split in a process."""
  from embbert_jax import artifacts
  cfg = tiny_config(tmp_path, steps=4, eval_every=4, token_lr_scale=0.0, token_vectors=True)
  assert train.get_config().label_columns is True
  task, _, enc = loop.prepare_task(cfg)
  fit = labelcols.for_run(cfg, enc["train"], task)
  assert fit.columns.shape == (cfg.model.vocab_size, 1) and np.abs(fit.columns).max() > 0
  assert labelcols.for_run(cfg, enc["train"], task) is fit  # the memo: one fit per split and vocabulary
  vectors = str(wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir))
  tables = {}
  for on in (True, False):
    cfg.label_columns = on
    train.train_and_evaluate(cfg, tmp_path / f"lc{on}")
    params, _, _ = artifacts.load_model(tmp_path / f"lc{on}" / "finetune" / "model")
    tables[on] = params["encoder"]["embedder"]["token"]["embedding"]
    saved = json.loads((tmp_path / f"lc{on}" / "finetune" / "config.json").read_text())
    assert saved["label_columns"] is on
  out = capsys.readouterr().out
  assert out.count("label columns: the token table's last 1 column") == 3  # the two calls above, one run
  start = programs.init_members(cfg.model, [cfg.seed], "classify", None, vectors, fit)
  np.testing.assert_array_equal(tables[True], start["encoder"]["embedder"]["token"]["embedding"][0])
  plain = programs.init_members(cfg.model, [cfg.seed], "classify", None, vectors)
  np.testing.assert_array_equal(tables[False], plain["encoder"]["embedder"]["token"]["embedding"][0])
  assert not np.array_equal(tables[True][:, -1], tables[False][:, -1])


def test_more_classes_get_them_with_the_readout_only_and_regression_never(tmp_path, capsys):
  from types import SimpleNamespace
  cfg = tiny_config(tmp_path, token_vectors=True)
  train_split = SimpleNamespace(ids=np.full((4, 6), 7, np.int32), labels=np.array([0, 1, 2, 0]))
  for task, why in ((SimpleNamespace(is_regression=False, num_labels=3), "3 classes without label_readout"),
                    (SimpleNamespace(is_regression=True, num_labels=1), "a regression task")):
    assert labelcols.for_run(cfg, train_split, task) is None
    assert f"label columns: none ({why}" in capsys.readouterr().out
  cfg.label_columns = False
  assert labelcols.for_run(cfg, train_split, SimpleNamespace(is_regression=False, num_labels=2)) is None
  assert capsys.readouterr().out == ""  # off: silent


def test_a_readout_model_starts_as_the_linear_model_of_the_mean_column(tmp_path, capsys):
  """With label_readout the first logits are the one-feature logistic regression on the text's mean of the
  label column (scikit-learn's, where installed): its readout and bias, a zero head kernel; without the
  fit the readout starts at 0 and the head's kernel is random."""
  import jax.numpy as jnp
  from embbert_jax import models
  cfg = tiny_config(tmp_path, token_vectors=True)
  cfg.model.label_readout = True
  task, _, enc = loop.prepare_task(cfg)
  ids, labels = enc["train"].ids, enc["train"].labels
  fit = labelcols.for_run(cfg, enc["train"], task)
  assert "the classifier starts as it (label_readout:" in capsys.readouterr().out
  slopes, icpts = fit.readout
  np.testing.assert_allclose(slopes[0], -slopes[1]) and np.testing.assert_allclose(icpts[0], -icpts[1])
  slope, icpt = slopes[1] - slopes[0], icpts[1] - icpts[0]
  feature = labelcols.label_feature(ids, fit.columns)[:, 0]
  sk = pytest.importorskip("sklearn.linear_model")
  ref = sk.LogisticRegression(C=1e6, tol=1e-10, max_iter=10_000).fit(feature[:, None], labels)
  np.testing.assert_allclose([slope, icpt], [ref.coef_[0, 0], ref.intercept_[0]], rtol=2e-3, atol=2e-3)
  vectors = str(wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir))
  first = programs.member_params(programs.init_members(cfg.model, [0], "classify", None, vectors, fit), 0)
  logits = np.asarray(models.build_model(cfg.model).apply({"params": first}, jnp.asarray(ids)))
  np.testing.assert_allclose(logits[:, 1] - logits[:, 0], slope * feature + icpt, rtol=1e-4, atol=1e-4)
  assert np.all(first["head"]["dense"]["kernel"] == 0)
  other = programs.init_members(cfg.model, [0], "classify", None, vectors, None)
  assert np.all(other["head"]["readout"] == 0) and np.abs(other["head"]["dense"]["kernel"]).max() > 0


def test_a_three_class_readout_model_starts_as_the_linear_model_of_its_columns(tmp_path, capsys):
  """Three classes with label_readout: three label columns, logit c = slope_c x the text's mean of column c
  + intercept_c, the maximum-likelihood fit (the softmax loss's gradient is 0 there), and the initialised
  model's logits are exactly that."""
  import jax.numpy as jnp
  from embbert_jax import models
  cfg = tiny_config(tmp_path, token_vectors=True)
  cfg.model.label_readout = True
  rng = np.random.RandomState(1)
  rows = []
  for i in range(300):
    words = list(rng.choice(["the", "a", "film", "plot", "story", "was"], 5))
    label = i % 3
    words.insert(rng.randint(0, 5), ["bad", "fine", "good"][label] if rng.rand() < 0.8 else "film")
    rows.append({"text": " ".join(words), "label": ["neg", "mid", "pos"][label]})
  (tmp_path / "three.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg.task = str(tmp_path / "three.jsonl")
  task, _, enc = loop.prepare_task(cfg)
  assert task.num_labels == 3
  cfg.model.num_labels = 3  # as loop.train_group sets it from the task
  fit = labelcols.for_run(cfg, enc["train"], task)
  assert "last 3 columns" in capsys.readouterr().out
  ids, labels = enc["train"].ids, np.asarray(enc["train"].labels)
  slopes, icpts = fit.readout
  assert fit.columns.shape == (cfg.model.vocab_size, 3) and slopes.shape == icpts.shape == (3,)
  feature = labelcols.label_feature(ids, fit.columns)
  z = feature * slopes + icpts
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  dz = p - np.eye(3)[labels]
  grad = np.concatenate([(dz * feature).sum(0) + 1e-6 * slopes, dz.sum(0)])
  assert np.abs(grad).max() < 1e-3 * len(labels)  # a stationary point of the training loss
  assert np.mean(z.argmax(1) == labels) > 0.6  # and it carries the evidence (chance 1/3)
  vectors = str(wordvecs.find(cfg.model.vocab_size, cfg.corpus, cfg.cache_dir))
  first = programs.member_params(programs.init_members(cfg.model, [0], "classify", None, vectors, fit), 0)
  logits = np.asarray(models.build_model(cfg.model).apply({"params": first}, jnp.asarray(ids)))
  np.testing.assert_allclose(logits, z, rtol=1e-4, atol=1e-4)


def test_a_readout_needs_a_table_column_per_class_and_the_space_drops_it_where_there_is_none():
  """The readout reads one token-table column per class: a config whose table is narrower fails in one
  line naming the field, and the default space builds such a grid point without the readout (a 20-class
  task keeps its r = 32 configs' readout and its r = 16 configs train without one), not as an error."""
  import dataclasses
  from embbert_jax import configs, memory
  from embbert_jax import space as space_lib
  assert configs.label_width(2) == 1 and configs.label_width(1, is_regression=True) == 1
  assert configs.label_width(5) == 5
  with pytest.raises(configs.ConfigError, match="label_readout reads one token-table column per class"):
    configs.model_config(num_labels=20, embed_dim=16, label_readout=True)
  configs.model_config(num_labels=16, embed_dim=16, label_readout=True)  # as many columns as classes: fits
  space = space_lib.load("default")
  fam = space.families.embbert
  for r, kept in ((16, False), (32, True)):
    cand = space_lib.build("embbert", fam, {"embed_dim": r}, num_labels=20)
    assert cand.model.label_readout is kept
    plain = dataclasses.replace(cand.model, label_readout=False)
    assert cand.params - memory.num_params(plain) == (20 if kept else 0)  # the readout's C weights, priced
  four = space_lib.build("embbert", fam, {"embed_dim": 16}, num_labels=4)
  assert four.model.label_readout and four.model.num_labels == 4
