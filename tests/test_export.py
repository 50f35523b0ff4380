"""Saved models, the export (byte-exact against memory, C header), the NumPy reference and the CLI errors."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from embbert_jax import configs, export, memory, models, reference
from embbert_jax import tokenizer as tk
from embbert_jax.configs import CLS_ID, PAD_ID, SEP_ID

TINY = dict(vocab_size=64, max_len=16, hidden=16, embed_dim=4, conv_kernel=4, num_layers=2, num_labels=3)


@pytest.fixture(scope="module")
def tiny():
  cfg = configs.model_config(**TINY)
  return cfg, jax.jit(lambda k: models.init_params(cfg, k))(jax.random.key(0))


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  rng = np.random.default_rng(0)
  words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park", "movie", "great", "bad"]
  corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  corpus.write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(300)) + "\n")
  return tk.train_tokenizer(corpus, 48, tmp_path_factory.mktemp("spm") / "spm")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny, spm_model):
  cfg, params = tiny
  return export.save_model(tmp_path_factory.mktemp("ckpt"), params, cfg, tokenizer_path=spm_model)


def random_ids(cfg, n, seed=0):
  """Right-padded sequences of random lengths starting with [CLS]; about half are pairs with a [SEP]."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, cfg.vocab_size, (n, cfg.max_len)).astype(np.int32)
  ids[:, 0] = CLS_ID
  for i, length in enumerate(rng.randint(1, cfg.max_len + 1, n)):
    ids[i, length:] = PAD_ID
    if length > 3 and i % 2:
      ids[i, rng.randint(1, length - 1)] = SEP_ID
  return ids


def test_save_load_roundtrip(ckpt, tiny):
  cfg, params = tiny
  loaded, cfg2, tok = export.load_model(ckpt)
  assert cfg2.to_dict() == cfg.to_dict()
  assert tok == ckpt / export.TOKENIZER_FILE and tok.is_file()
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, loaded))
  assert export.load_model(ckpt / export.PARAMS_FILE)[1].to_dict() == cfg.to_dict()  # the npz path works too


@pytest.mark.parametrize("policy", ["int8", "int8_full", "fp16", "fp32"])
def test_headline_export_is_byte_exact(tmp_path, policy):
  cfg = configs.get_preset("embbert")
  # Byte counts depend on shapes only: the init pytree's structure (abstract) filled with N(0, 1) values.
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  rng = np.random.RandomState(0)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  manifest = export.export(params, cfg, tmp_path, policy=policy)
  with np.load(tmp_path / export.MODEL_NPZ) as z:
    payload = sum(z[k].nbytes for k in z.files)
  est = memory.estimate(cfg, policy)
  assert payload == manifest["weight_bytes"] == est.weight_bytes
  assert manifest["weight_bytes_by_class"] == est.weight_bytes_by_class
  on_disk = json.loads((tmp_path / export.MANIFEST).read_text())
  assert sum(t["bytes"] + (t["scale"]["bytes"] if t["scale"] else 0) for t in on_disk["tensors"]) == payload
  if policy == "int8":  # the paper's EmbBERT-Q: about 0.78 MB with activations
    assert est.total_bytes == 779_784


def test_c_header_compiles_and_holds_the_arrays(tmp_path, ckpt):
  assert export.main([str(ckpt), "--format", "all", "--policy", "int8_full", "--out", str(tmp_path)]) == 0
  header = (tmp_path / export.HEADER).read_text()
  for name in ("VOCAB_SIZE 64", "MAX_LEN 16", "HIDDEN 16", "EMBED_DIM 4", "CONV_KERNEL 4", "NUM_LAYERS 2",
               "NUM_LABELS 3", "PAD_ID 0", "CLS_ID 2", "SEP_ID 4", "WEIGHT_BYTES"):
    assert f"#define EMBBERT_{name}" in header
  assert "const int8_t embbert_encoder_layer_0_attention_q_kernel[256]" in header
  assert (tmp_path / export.TOKENIZER_FILE).is_file()
  assert json.loads((tmp_path / export.MANIFEST).read_text())["tokenizer"] == export.TOKENIZER_FILE
  gcc = shutil.which("gcc")
  if gcc is None:
    pytest.skip("gcc not installed")
  flags = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
  subprocess.run([gcc, *flags, "-x", "c", "-c", str(tmp_path / "model.h"), "-o", str(tmp_path / "m.o")],
                 check=True)
  # A program using the header prints a few values; they must be the npz's (fp16 scales decoded in C).
  main_c = tmp_path / "main.c"
  main_c.write_text('#include <stdio.h>\n#include "model.h"\nint main(void) {\n'
                    '  printf("%d %d %.9g %.9g\\n", embbert_encoder_layer_1_conv_branch_proj_kernel[5],\n'
                    '         embbert_encoder_embedder_token_embedding[70],\n'
                    '    embbert_fp16_to_float(embbert_encoder_layer_1_conv_branch_proj_kernel_scale[3]),\n'
                    '         embbert_fp16_to_float(embbert_encoder_layer_0_norm_scale[2]));\n'
                    '  return EMBBERT_WEIGHT_BYTES > 0 ? 0 : 1;\n}\n')
  exe = tmp_path / "main"
  subprocess.run([gcc, *flags, str(main_c), "-o", str(exe)], check=True)
  out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
  with np.load(tmp_path / export.MODEL_NPZ) as z:
    want = [z["encoder/layer_1/conv_branch/proj/kernel"].ravel()[5],
            z["encoder/embedder/token/embedding"].ravel()[70],
            z["encoder/layer_1/conv_branch/proj/kernel.scale"][3], z["encoder/layer_0/norm/scale"][2]]
  assert [int(out[0]), int(out[1])] == [int(want[0]), int(want[1])]
  # %.9g round-trips a float32 exactly: the C decoder gives the fp16 value bit for bit.
  assert np.array_equal(np.asarray(out[2:], np.float32), np.asarray(want[2:], np.float32))


@pytest.mark.parametrize("policy", ["int8", "int8_full"])
def test_reference_agrees_with_jax(tmp_path, tiny, policy):
  cfg, params = tiny
  export.export(params, cfg, tmp_path, policy=policy)
  ids = random_ids(cfg, 200)
  labels, logits = reference.predict(tmp_path, ids)
  jax_logits = np.asarray(models.build_model(cfg).apply({"params": params}, ids))
  assert np.std(jax_logits.argmax(-1)) > 0 and np.median(np.ptp(jax_logits, axis=-1)) > 0.05  # not tied
  assert np.abs(logits - jax_logits).max() < 0.1  # int8 noise, not a different model
  assert reference.agreement(tmp_path, params, cfg, ids, batch_size=len(ids)) >= 0.99


def test_reference_fp32_is_the_jax_model(tmp_path, tiny):
  cfg, params = tiny
  export.export(params, cfg, tmp_path, policy="fp32")
  ids = random_ids(cfg, 32, seed=1)
  _, logits = reference.predict(tmp_path, ids)
  jax_logits = np.asarray(models.build_model(cfg).apply({"params": params}, ids))
  np.testing.assert_allclose(logits, jax_logits, atol=1e-5)


@pytest.mark.parametrize("policy", ["int8", "fp32"])
def test_reference_working_memory_matches_estimate(tmp_path, tiny, policy):
  cfg, params = tiny
  export.export(params, cfg, tmp_path, policy=policy)
  prof = reference.memory_profile(tmp_path)
  est = memory.estimate(cfg, policy).activation_bytes
  assert prof["live_peak_bytes"] == prof["estimate_activation_bytes"] == est
  assert prof["live_peak_at"].startswith("layer_0: q + scores + u")
  assert prof["tracemalloc_peak_bytes"] >= prof["live_peak_bytes"]


def test_reference_rejects_other_architectures(tmp_path):
  cfg = configs.model_config(arch="bert", vocab_size=64, max_len=16, hidden=16, ffn_dim=24, num_heads=2,
                             num_layers=1, embedder="standard")
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  export.export(jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes), cfg, tmp_path, policy="int8")
  with pytest.raises(NotImplementedError, match="embbert"):
    reference.predict(tmp_path, np.full((1, 16), CLS_ID))


def _corrupt(tmp_path, ckpt, how):
  bad = tmp_path / "bad"
  shutil.copytree(ckpt, bad)
  if how == "missing":
    return tmp_path / "nowhere"
  if how == "truncated_npz":
    data = (bad / export.PARAMS_FILE).read_bytes()
    (bad / export.PARAMS_FILE).write_bytes(data[:len(data) // 2])
  elif how == "garbage_config":
    (bad / export.CONFIG_FILE).write_text("{not json")
  elif how == "wrong_shapes":
    meta = json.loads((bad / export.CONFIG_FILE).read_text())
    meta["model"]["hidden"] = 32
    (bad / export.CONFIG_FILE).write_text(json.dumps(meta))
  elif how == "no_params":
    (bad / export.PARAMS_FILE).unlink()
  return bad


@pytest.mark.parametrize("how", ["missing", "truncated_npz", "garbage_config", "wrong_shapes", "no_params"])
def test_bad_checkpoint_is_one_clear_line_and_exit_2(tmp_path, ckpt, how, capsys):
  path = _corrupt(tmp_path, ckpt, how)
  assert export.main([str(path), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err
  assert not (tmp_path / "out").exists()


def test_cli_as_a_module(tmp_path, ckpt):
  bad = _corrupt(tmp_path, ckpt, "truncated_npz")
  run = subprocess.run([sys.executable, "-m", "embbert_jax.export", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
  assert run.returncode == 2 and run.stderr.startswith("error: corrupt") and run.stderr.count("\n") == 1


def test_pretraining_model_loads_but_is_not_exported(tmp_path, tiny, capsys):
  cfg, _ = tiny
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0), task="pretrain"))
  params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  export.save_model(tmp_path / "pre", params, cfg)
  loaded, _, tok = export.load_model(tmp_path / "pre")  # train.py reloads pre-trained encoders this way
  assert "mlm" in loaded["head"] and tok is None
  assert export.main([str(tmp_path / "pre"), "--out", str(tmp_path / "out")]) == 2
  assert "pre-training" in capsys.readouterr().err
