"""Weights and tokenizers shipped in the package: a fresh install with no way to fetch the corpus fine-tunes
from them. On a tiny pre-training shipped into temporary folders (the package's roots monkeypatched): the
fp16 round trip, the one-line checksum error, `--init auto` taking the shipped encoder for its exact config
only, the default-corpus tokenizer coming from the shipped folder without the corpus (never for a given
corpus), and the tokenizers that really ship (recipe, checksums, package data)."""

import configparser
import fnmatch
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from embbert_jax import artifacts, configs, data, files, inits, loop, pretrained, programs, train
from embbert_jax import tokenizer as tok_lib
from embbert_jax.data import corpus as corpus_mod
from embbert_jax.data import tasks as tasks_mod
from test_init import _supernet
from test_train import TINY_MODEL, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pre(tmp_path_factory):
  """A finished 3-step pre-training of the tiny fixture: (its config, its workdir)."""
  root = tmp_path_factory.mktemp("pre")
  cfg = tiny_config(root)
  cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.eval_pairs, cfg.pretrain.eval_every = 3, 16, 32, 3
  loop.pretrain(cfg, root / "pre", command="python -m embbert_jax.pretrain --test")
  cfg.pretrain.steps = 0  # the fine-tuning configs below take the encoder from a folder
  return cfg, root / "pre"


def _no_fetch(monkeypatch) -> list:
  """Every registry fetch (corpus sources and the tasks whose texts the corpus excludes) fails, as offline."""
  calls = []

  def fail(source, *a, **k):
    calls.append(source.filename)
    raise data.DataError(f"offline: cannot fetch {source.filename}")
  monkeypatch.setattr(corpus_mod, "ensure_archive", fail)
  monkeypatch.setattr(tasks_mod, "ensure_archive", fail)
  return calls


def _ship_tokenizer(tmp_path, monkeypatch, cfg) -> Path:
  """The tiny corpus's 96-piece tokenizer shipped as the default corpus's (ship_default_tokenizers on a
  corpus whose card names every default source), then the package's tokenizers/ pointed there."""
  corpus = Path(cfg.corpus)
  card = {"key": "tiny", "skipped_sources": {}, "sources": [{"name": n} for n in data.DEFAULT_CORPUS_SOURCES]}
  Path(str(corpus) + ".card.json").write_text(json.dumps(card))
  dest = tmp_path / "tokenizers"
  with monkeypatch.context() as m:
    m.setattr(tok_lib, "pretraining_corpus", lambda cache_dir=None: corpus)
    index = tok_lib.ship_default_tokenizers([96], cfg.cache_dir, dest, command="test")
  assert index["corpus_id"] == data.default_corpus_id() and index["tokenizers"]["96"]["file"] == "bpe96.model"
  monkeypatch.setattr(tok_lib, "SHIPPED", dest)
  return dest


def _shipped(tmp_path, monkeypatch, workdir, name="tiny") -> Path:
  monkeypatch.setattr(pretrained, "ROOT", tmp_path / "pretrained")
  return pretrained.make(workdir, name, command="python -m embbert_jax.ship encoder test")


def test_fp16_round_trip_and_manifest(pre, tmp_path, monkeypatch):
  cfg, workdir = pre
  folder = _shipped(tmp_path, monkeypatch, workdir)
  assert folder == tmp_path / "pretrained" / "tiny" and pretrained.is_pretrained(folder)
  full, saved_cfg, _ = artifacts.load_model(workdir / "model")
  enc, got_cfg, m = pretrained.load(folder)
  assert got_cfg == saved_cfg
  with np.load(folder / "params.npz") as z:
    assert {str(z[k].dtype) for k in z.files} == {"float16"} and all(k.startswith("encoder/") for k in z.files)
  for want, got in zip(jax.tree.leaves(full["encoder"]), jax.tree.leaves(enc)):
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)  # fp16 keeps 11 significant bits
  assert m["fp16_max_abs_error"] <= 1e-2 and m["params_sha256"] == files.sha256_file(folder / "params.npz")
  assert m["steps"] == 3 and m["made_by"] == "python -m embbert_jax.ship encoder test"
  p = m["pretraining"]  # the pre-training's manifest, whole
  assert p["command"] == "python -m embbert_jax.pretrain --test" and p["seed"] == cfg.seed
  assert p["corpus_sha256"] == files.sha256_file(cfg.corpus) and p["wall_s"] > 0 and p["stopped_by"] == "steps"
  assert {"mlm_loss", "mlm_perplexity", "mlm_accuracy", "nsp_accuracy"} <= set(p["final"])
  # Not a shipped tokenizer: copied beside it, sha256-checked.
  assert files.sha256_file(pretrained.tokenizer_path(folder)) == m["tokenizer_sha256"]
  assert pretrained.tokenizer_path(folder) == folder / "tokenizer.model"
  # The classifier's encoder is the upcast fp16 encoder.
  members = programs.init_members(cfg.model, [0], "classify", [str(folder)])
  for g, w in zip(jax.tree.leaves(members["encoder"]), jax.tree.leaves(enc)):
    np.testing.assert_array_equal(g[0], w)


def test_a_damaged_params_file_is_a_one_line_error_naming_it(pre, tmp_path, monkeypatch):
  cfg, workdir = pre
  folder = _shipped(tmp_path, monkeypatch, workdir)
  f = folder / "params.npz"
  blob = bytearray(f.read_bytes())
  blob[len(blob) // 2] ^= 0xFF
  f.write_bytes(bytes(blob))
  for call in (lambda: pretrained.load(folder), lambda: programs.load_encoder(str(folder), cfg.model),
               lambda: inits.resolve(cfg, "auto"), lambda: inits.resolve(cfg, str(folder))):
    with pytest.raises(ValueError) as e:
      call()
    msg = str(e.value)
    assert str(f) in msg and "sha256" in msg and "\n" not in msg, msg


def test_auto_takes_the_shipped_encoder_for_its_exact_config_only(pre, tmp_path, monkeypatch):
  cfg, workdir = pre
  folder = _shipped(tmp_path, monkeypatch, workdir)
  want = inits.Init("pretrained", str(folder), 3)
  assert inits.resolve(cfg, "auto") == inits.resolve(cfg, "pretrained") == inits.resolve(cfg, "tiny") == want
  assert "the shipped pre-trained encoder in" in want.describe()
  regression = cfg.copy_and_resolve_references()
  regression.model.num_labels, regression.model.dropout = 1, 0.0  # head size and dropout: not the encoder
  assert inits.resolve(regression, "auto") == want
  for field, value in (("hidden", 32), ("num_layers", 2), ("max_len", 64), ("residual", True)):
    other = cfg.copy_and_resolve_references()
    other.model[field] = value
    assert inits.resolve(other, "auto").kind == "embeddings", field  # no encoder: token vectors
    with pytest.raises(inits.InitError, match="no encoder shipped") as e:
      inits.resolve(other, "pretrained")
    assert "\n" not in str(e.value) and "there: tiny" in str(e.value)
  # A sweep passes all fitting configs: a standalone encoder only when they all have its config.
  wide = configs.ModelConfig.from_dict({**cfg.model.to_dict(), "hidden": 32})
  assert inits.resolve(cfg, "auto", [("a", cfg.model), ("b", wide)]).kind == "embeddings"
  assert inits.resolve(cfg, "auto", [("a", cfg.model), ("b", cfg.model)]) == want
  # In-run pre-training and a supernet that holds the config come first.
  steps = cfg.copy_and_resolve_references()
  steps.pretrain.steps = 2
  assert inits.resolve(steps, "auto").kind == "pretrain_steps"
  sup_cfg = cfg.copy_and_resolve_references()
  sup_cfg.cache_dir = str(tmp_path / "cache")
  _supernet(tmp_path, sup_cfg)
  assert inits.resolve(sup_cfg, "auto").kind == "supernet"
  # Another tokenizer (a corpus of other text) at the same vocabulary: not this encoder.
  other_corpus = tmp_path / "other.txt"
  other_corpus.write_text("\n\n".join("\n".join(f"word{i} thing{j} other{i * j} text." for j in range(8))
                                      for i in range(40)) + "\n")
  retok = cfg.copy_and_resolve_references()
  retok.corpus = str(other_corpus)
  assert inits.resolve(retok, "auto").kind == "embeddings"


def test_the_default_corpus_tokenizer_comes_from_the_shipped_folder_offline(pre, tmp_path, monkeypatch):
  cfg, _ = pre
  shipped = _ship_tokenizer(tmp_path, monkeypatch, cfg)
  calls = _no_fetch(monkeypatch)
  empty = tmp_path / "fresh-cache"
  tok = tok_lib.get_tokenizer(96, cache_dir=empty)
  assert tok.model_path == shipped / "bpe96.model" and tok.vocab_size == 96
  assert not calls and not empty.exists()  # neither fetched nor built anything
  # A given corpus never takes the shipped tokenizer, even the very file it was made from.
  given = tok_lib.get_tokenizer(96, corpus_path=cfg.corpus, cache_dir=tmp_path / "c2")
  assert given.model_path.parent.parent == tmp_path / "c2" / "tokenizers"
  # Another vocabulary is not shipped: the default corpus must be built, and fetching fails.
  with pytest.raises(data.DataError, match="offline"):
    tok_lib.get_tokenizer(128, cache_dir=empty)
  assert calls


def test_a_shipped_tokenizer_for_another_recipe_or_damaged_is_not_used(pre, tmp_path, monkeypatch, capsys):
  cfg, _ = pre
  shipped = _ship_tokenizer(tmp_path, monkeypatch, cfg)
  _no_fetch(monkeypatch)
  index = json.loads((shipped / "index.json").read_text())
  (shipped / "index.json").write_text(json.dumps({**index, "corpus_id": "0" * 16}))
  monkeypatch.setattr(tok_lib, "_NOTED", set())
  with pytest.raises(data.DataError, match="offline"):  # skipped: the corpus is built, which needs fetching
    tok_lib.get_tokenizer(96, cache_dir=tmp_path / "fresh")
  assert "not using the tokenizers shipped" in capsys.readouterr().err
  with monkeypatch.context() as m:  # a recipe bump changes the identity too
    m.setattr(corpus_mod, "_CORPUS_VERSION", 99)
    assert data.default_corpus_id() != index["corpus_id"]
  (shipped / "index.json").write_text(json.dumps(index))
  (shipped / "bpe96.model").write_bytes((shipped / "bpe96.model").read_bytes()[:-1])
  with pytest.raises(tok_lib.ShippedTokenizerError) as e:
    tok_lib.get_tokenizer(96)
  assert str(shipped / "bpe96.model") in str(e.value) and "\n" not in str(e.value)
  # A corpus built with a source skipped cannot be shipped as the default corpus's.
  card = Path(cfg.corpus + ".card.json")
  card.write_text(json.dumps({"skipped_sources": {"gcide": "no apt"}, "sources": [{"name": "shakespeare"}]}))
  monkeypatch.setattr(tok_lib, "pretraining_corpus", lambda cache_dir=None: Path(cfg.corpus))
  with pytest.raises(tok_lib.ShippedTokenizerError, match="not every default source"):
    tok_lib.ship_default_tokenizers([96], cfg.cache_dir, tmp_path / "x")


def test_a_fresh_install_fine_tunes_from_the_shipped_encoder_and_tokenizer(pre, tmp_path, monkeypatch, capsys):
  """No corpus can be fetched; the run uses the default corpus (no --set corpus): the shipped tokenizer
  is the run's, the shipped encoder (which refers to it instead of carrying a copy) is taken by auto."""
  cfg, workdir = pre
  shipped_tok = _ship_tokenizer(tmp_path, monkeypatch, cfg)
  folder = _shipped(tmp_path, monkeypatch, workdir)
  assert not (folder / "tokenizer.model").exists()
  assert pretrained.tokenizer_path(folder) == shipped_tok / "bpe96.model"
  calls = _no_fetch(monkeypatch)
  flags = [x for k, v in TINY_MODEL.items() for x in ("--set", f"model.{k}={v}")] + [
      "--task", cfg.task, "--set", f"cache_dir={tmp_path / 'fresh'}", "--set", "batch_size=16",
      "--wandb", "disabled", "--steps", "2", "--workdir", str(tmp_path / "run")]
  train.main(flags)
  out = capsys.readouterr().out
  assert f"init: pretrained: the shipped pre-trained encoder in {folder} (3 pre-training steps)" in out
  result = json.loads((tmp_path / "run" / "finetune" / "result.json").read_text())
  assert result["init"] == {"kind": "pretrained", "path": str(folder), "steps": 3} and result["recipe"] == "spec"
  saved_tok = tmp_path / "run" / "finetune" / "model" / "tokenizer.model"  # the run's tokenizer: the shipped one
  assert files.sha256_file(saved_tok) == files.sha256_file(shipped_tok / "bpe96.model")
  assert not calls and not (tmp_path / "fresh" / "tokenizers").exists()


def test_the_package_ships_the_default_corpus_tokenizers(monkeypatch):
  index = tok_lib.shipped_index()
  assert index and index["format"] == tok_lib.SHIPPED_FORMAT
  # Fails after a corpus or tokenizer recipe change until a maintainer re-ships: python -m embbert_jax.ship tokenizers
  assert {k: index[k] for k in ("corpus_id", "tokenizer_recipe")} == tok_lib.shipped_identity()
  assert index["corpus_recipe"] == data.default_corpus_recipe()
  assert sorted(map(int, index["tokenizers"])) == list(tok_lib.SHIPPED_VOCABS)
  calls = _no_fetch(monkeypatch)
  for v, e in index["tokenizers"].items():
    tok = tok_lib.get_tokenizer(int(v))
    assert tok.model_path == tok_lib.SHIPPED / e["file"] and tok.vocab_size == int(v)
    assert files.sha256_file(tok.model_path) == e["sha256"]
  assert not calls
  shipped = sorted(p.relative_to(ROOT / "embbert_jax").as_posix() for p in tok_lib.SHIPPED.iterdir())
  assert sum(p.stat().st_size for p in tok_lib.SHIPPED.iterdir()) < 1_000_000
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  globs = cfg["options.package_data"]["embbert_jax"].split()
  assert all(any(fnmatch.fnmatch(p, g) for g in globs) for p in shipped), (shipped, globs)
  assert any(g.startswith("pretrained/") for g in globs)
