"""`train --init`: a supernet folder gives exactly the config's slice (not a fresh init), a config the
supernet does not hold fails in one line, `auto` finds a cached supernet, and result.json records the init."""

import json

import jax
import numpy as np
import pytest

from embbert_jax import artifacts, configs, inits, models, programs, supernet, train
from embbert_jax import tokenizer as tok_lib
from test_train import TINY_MODEL, tiny_config


def _supernet(root, cfg, steps=7):
  """A saved supernet in the cache (as supernet_train writes it): the tiny model at twice the width and depth."""
  sup = configs.model_config(**{**cfg.model.to_dict(), "hidden": 32, "num_layers": 2})
  params = jax.device_get(models.init_params(sup, jax.random.key(3), task="pretrain"))
  tok = tok_lib.get_tokenizer(cfg.model.vocab_size, corpus_path=cfg.corpus, cache_dir=cfg.cache_dir)
  folder = artifacts.save_model(root / "cache" / "supernets" / "tiny-1MB-v96" / "model", params, sup,
                                tokenizer_path=tok.model_path)
  (folder / "manifest.json").write_text(json.dumps({"supernet": sup.to_dict(), "vocab_size": sup.vocab_size,
                                                    "space": "tiny", "steps": steps}))
  return folder, sup, params


def test_a_supernet_folder_gives_the_configs_slice(tmp_path):
  cfg = tiny_config(tmp_path)
  folder, sup, sup_params = _supernet(tmp_path, cfg)
  init = inits.resolve(cfg, str(folder.parent))  # the workdir or its model folder
  assert (init.kind, init.path, init.steps) == ("supernet", str(folder), 7)
  got = programs.init_members(cfg.model, [0], "classify", [init.path])
  child = configs.ModelConfig.from_dict(cfg.model)
  want = supernet.extract(sup_params, sup, child, "pretrain")["encoder"]
  scratch = programs.init_members(cfg.model, [0], "classify")
  assert jax.tree.structure(got["encoder"]) == jax.tree.structure(want)
  for g, w, s in zip(jax.tree.leaves(got["encoder"]), jax.tree.leaves(want), jax.tree.leaves(scratch["encoder"])):
    np.testing.assert_array_equal(g[0], w)
  assert not all(np.array_equal(g[0], s[0]) for g, s in zip(jax.tree.leaves(got["encoder"]),
                                                               jax.tree.leaves(scratch["encoder"])))
  # The classifier head is new (the supernet's heads are MLM and NSP).
  for g, s in zip(jax.tree.leaves(got["head"]), jax.tree.leaves(scratch["head"])):
    np.testing.assert_array_equal(g, s)


def test_auto_and_supernet_find_a_cached_supernet_that_holds_the_config(tmp_path):
  cfg = tiny_config(tmp_path)
  folder, _, _ = _supernet(tmp_path, cfg)
  assert inits.resolve(cfg, "auto") == inits.resolve(cfg, "supernet") == inits.Init("supernet", str(folder), 7)
  assert inits.resolve(cfg, "scratch").kind == "scratch"
  wide = tiny_config(tmp_path)
  wide.model.hidden = 64  # the supernet stops at 32: not one of its sub-networks
  assert inits.resolve(wide, "auto").kind == "embeddings"  # no encoder: token vectors
  with pytest.raises(inits.InitError, match="supernet_train") as e:
    inits.resolve(wide, "supernet")
  assert "\n" not in str(e.value)
  pre = tiny_config(tmp_path)
  pre.pretrain.steps = 3
  assert inits.resolve(pre, "auto") == inits.Init("pretrain_steps", steps=3)
  with pytest.raises(inits.InitError, match="both"):
    inits.resolve(pre, str(folder))


def _flags(cfg):
  return [x for k, v in TINY_MODEL.items() for x in ("--set", f"model.{k}={v}")] + [
      "--task", cfg.task, "--set", f"corpus={cfg.corpus}", "--set", f"cache_dir={cfg.cache_dir}",
      "--set", "batch_size=16", "--wandb", "disabled"]


def test_a_config_outside_the_supernet_fails_in_one_line(tmp_path, capsys):
  cfg = tiny_config(tmp_path)
  folder, _, _ = _supernet(tmp_path, cfg)
  for flag in ("--init", "--init-from"):
    with pytest.raises(SystemExit) as e:
      train.main(_flags(cfg) + ["--set", "model.hidden=64", flag, str(folder), "--workdir", str(tmp_path / "w")])
    msg = [l for l in capsys.readouterr().err.splitlines() if "error" in l]  # (the tokenizer may say it trains)
    assert e.value.code == 2 and len(msg) == 1 and msg[0].startswith("error: preset embbert is not a sub-network")
    assert "hidden=64 exceeds" in msg[0]
  assert not (tmp_path / "w").exists()


def test_train_uses_and_records_the_cached_supernet_by_default(tmp_path, capsys):
  cfg = tiny_config(tmp_path)
  folder, _, _ = _supernet(tmp_path, cfg)
  train.main(_flags(cfg) + ["--steps", "2", "--workdir", str(tmp_path / "run")])
  out = capsys.readouterr().out
  assert f"init: supernet: the slice of the supernet in {folder}" in out
  assert "recipe spec" in out  # a pre-trained encoder: the fine-tuning recipe
  result = json.loads((tmp_path / "run" / "finetune" / "result.json").read_text())
  assert result["init"] == {"kind": "supernet", "path": str(folder), "steps": 7} and result["recipe"] == "spec"


def test_a_missing_init_folder_fails_in_one_line(tmp_path, capsys):
  cfg = tiny_config(tmp_path)
  with pytest.raises(SystemExit) as e:
    train.main(_flags(cfg) + ["--init", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.startswith("error: --init ") and "no such folder" in err and err.count("\n") == 1


def test_a_broken_manifest_in_an_init_folder_fails_in_one_line_naming_it(tmp_path, capsys):
  cfg = tiny_config(tmp_path)
  folder, _, _ = _supernet(tmp_path, cfg)
  (folder / "manifest.json").write_text("{not json")
  with pytest.raises(SystemExit) as e:
    train.main(_flags(cfg) + ["--init", str(folder), "--workdir", str(tmp_path / "w")])
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error")]
  assert e.value.code == 2 and len(err) == 1 and str(folder / "manifest.json") in err[0], err


def test_the_init_a_config_carries_is_read_back_from_its_fields(tmp_path):
  """inits.carried inverts configs.init_fields (saved config.json dicts too): a study's runs record it."""
  assert inits.carried({}).kind == "scratch"
  assert inits.carried({"token_vectors": True}) == inits.Init("embeddings")
  assert inits.carried({"pretrain": {"steps": 40}, "init_from": "x"}) == inits.Init("pretrain_steps", "x", 40)
  folder = tmp_path / "enc"
  (folder / "model").mkdir(parents=True)
  (folder / "model" / "manifest.json").write_text(json.dumps({"steps": 123}))
  got = inits.carried({"init_from": str(folder), "pretrain": {"steps": 0}})
  assert (got.kind, got.steps) == ("pretrained", 123)
  for init in (inits.Init("embeddings"), inits.Init("pretrained", str(folder), 123)):
    assert inits.carried(configs.init_fields(init.record())) == init
