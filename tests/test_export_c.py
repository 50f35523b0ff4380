"""The C99 export: it builds with -Werror, its tokenizer gives Python's ids, its labels equal the NumPy int8
reference (100 %) and the JAX model (>= 99 %), and its static arena is the memory rule's figure."""

import json
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from embbert_jax import configs, export, export_c, export_tokenizer, memory, models, reference
from embbert_jax import tokenizer as tk

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="the C export needs make and a C compiler (cc)")

GOOD = ["Good", "great", "fine", "Naïve", "lovely", "superb", "Café", "fun"]
BAD = ["bad", "awful", "dull", "Boring", "weak", "poor", "déjà", "mess"]
FILLER = ["the", "a", "movie", "film", "was", "is", "and", "very", "plot", "actors", "but", "not", "this"]
ADVERSARIAL = [
    "", "   ", "\t\r\x0b", "A Gripping Film!", "ÉCOLE Ça va? naïve café", "ﬁne ǆ ℌ İstanbul", "ΟΔΟΣ σς",
    "non\u00a0breaking\u2028line\x1cseparators\x1fhere", "emoji 😀😀 run 中文字 x", "combining e\u0301 \u0301alone",
    "[SEP] [CLS] literal", "\u2581lower\u2581block \u2581", "x" * 300, "word " * 80, "tab\tsep\u3000ideographic",
    "MiXeD CaSe 123 -- (ok); 'quotes' \"double\"", "\u00bd \u2460 \u2167 \uff21\uff22",
]
CFG = dict(max_len=32, hidden=16, embed_dim=8, conv_kernel=4, num_layers=2, num_labels=2)


def random_params(cfg, seed: int = 0) -> dict:
  """N(0, 0.3) parameters of the classifier's exact shapes, without a Flax init (fast)."""
  rng = np.random.default_rng(seed)
  return export.unflatten_params({"/".join(s.path): (0.3 * rng.standard_normal(s.shape)).astype(np.float32)
                                  for s in memory.param_shapes(cfg)})


def make_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
  """Generated reviews: the label says whether good words outnumber bad ones (ties: 0)."""
  rng = np.random.default_rng(seed)
  texts, labels = [], []
  for _ in range(n):
    words, score = [], 0
    for _ in range(rng.integers(1, 14)):
      r = rng.random()
      w = rng.choice(GOOD) if r < 0.2 else rng.choice(BAD) if r < 0.4 else rng.choice(FILLER)
      score += (w in GOOD) - (w in BAD)
      words.append(w.upper() if rng.random() < 0.1 else w)
    texts.append(" ".join(words) + rng.choice(["", ".", "!", " :)", "  "]))
    labels.append(int(score > 0))
  return texts, np.asarray(labels, np.int32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny EmbBERT trained for 80 steps on generated reviews, saved with its own tokenizer."""
  root = tmp_path_factory.mktemp("c_export")
  corpus, _ = make_texts(1500, seed=1)
  (root / "corpus.txt").write_text("\n".join(corpus + ADVERSARIAL[3:6]) + "\n")
  spm = tk.train_tokenizer(root / "corpus.txt", 120, root / "spm")
  tok = tk.Tokenizer(spm)
  cfg = configs.model_config(vocab_size=tok.vocab_size, **CFG)
  texts, labels = make_texts(2048, seed=2)
  ids = tok.encode_batch(texts, max_len=cfg.max_len)
  model = models.build_model(cfg)
  params = models.init_params(cfg, jax.random.key(0))
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, s, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = opt.init(params)
  for i in range(80):
    sl = slice((i * 64) % 2048, (i * 64) % 2048 + 64)
    params, state = step(params, state, jnp.asarray(ids[sl]), jnp.asarray(labels[sl]))
  ckpt = export.save_model(root / "model", jax.device_get(params), cfg, tokenizer_path=spm)
  return cfg, jax.device_get(params), tok, ckpt, root


def build(folder) -> str:
  subprocess.run(["make", "-s", "-C", str(folder)], check=True, capture_output=True, text=True)
  return str(folder / "embbert")


def run(binary: str, lines: list[str], *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([binary, *args], input=("\n".join(lines) + "\n").encode(), capture_output=True,
                        check=True)


@pytest.fixture(scope="module")
def int8_build(trained):
  cfg, params, tok, ckpt, root = trained
  out = root / "c_int8"
  manifest = export_c.export_c(params, cfg, out, policy="int8", tokenizer_path=tok.model_path,
                               label_names=["negative", "positive"])
  return manifest, out, build(out)


def py_ids(tok, cfg, texts):
  return [[int(i) for i in row if i != configs.PAD_ID] for row in tok.encode_batch(texts, max_len=cfg.max_len)]


def test_c_ids_equal_python(trained, int8_build):
  cfg, _, tok, _, _ = trained
  texts = make_texts(1200, seed=3)[0] + ADVERSARIAL
  out = run(int8_build[2], texts, "--ids").stdout.decode().splitlines()
  got = [[int(x) for x in line.split()] for line in out]
  assert len(got) == len(texts)
  want = py_ids(tok, cfg, texts)
  bad = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
  assert not bad, bad[:3]
  assert any(configs.UNK_ID in w for w in want) and any(len(w) == cfg.max_len for w in want)  # cases covered


def test_c_labels_equal_reference_and_jax(trained, int8_build):
  cfg, params, tok, _, _ = trained
  manifest, out, binary = int8_build
  texts, _ = make_texts(1000, seed=4)
  lines = run(binary, texts).stdout.decode().splitlines()
  names = [line.split()[0] for line in lines]
  logits_c = np.array([[float(x) for x in line.split()[1:]] for line in lines], np.float32)
  assert names == [manifest["c"]["labels"][i] for i in logits_c.argmax(1)]
  ids = tok.encode_batch(texts, max_len=cfg.max_len)
  _, logits_ref = reference.predict(out, ids)
  assert np.array_equal(logits_c.argmax(1), logits_ref.argmax(1))
  # fp16 logits; scores and P.u sum in another order than NumPy's BLAS, which moves a logit by a few ulps
  np.testing.assert_allclose(logits_c, logits_ref, atol=4e-3)
  logits_jax = np.asarray(models.build_model(cfg).apply({"params": params}, jnp.asarray(ids)))
  assert np.mean(logits_c.argmax(1) == logits_jax.argmax(1)) >= 0.99
  assert len(set(logits_c.argmax(1))) == 2  # a trained model, not a constant


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_clang_build_gives_the_same_output(trained, int8_build, tmp_path):
  folder = tmp_path / "clang"
  shutil.copytree(int8_build[1], folder)
  (folder / "embbert").unlink()
  subprocess.run(["make", "-s", "-C", str(folder), "CC=clang"], check=True, capture_output=True)
  texts = make_texts(200, seed=11)[0] + ADVERSARIAL
  assert run(str(folder / "embbert"), texts).stdout == run(int8_build[2], texts).stdout


def test_fast_math_build_is_refused(int8_build, tmp_path):
  folder = tmp_path / "fast"
  shutil.copytree(int8_build[1], folder)
  (folder / "embbert").unlink()
  r = subprocess.run(["make", "-s", "-C", str(folder), "CFLAGS=-O2 -ffast-math"], capture_output=True, text=True)
  assert r.returncode != 0 and "ffast-math" in r.stderr


def test_c_fp32_equals_reference(trained):
  cfg, params, tok, _, root = trained
  out = root / "c_fp32"
  export_c.export_c(params, cfg, out, policy="fp32", tokenizer_path=tok.model_path)
  texts, _ = make_texts(300, seed=5)
  lines = run(build(out), texts).stdout.decode().splitlines()
  logits_c = np.array([[float(x) for x in line.split()[1:]] for line in lines], np.float32)
  _, logits_ref = reference.predict(out, tok.encode_batch(texts, max_len=cfg.max_len))
  np.testing.assert_allclose(logits_c, logits_ref, atol=1e-5)
  assert [line.split()[0] for line in lines] == [str(i) for i in logits_c.argmax(1)]  # default label names


def test_arena_is_the_memory_rule_and_the_high_water_mark_reaches_it(trained, int8_build):
  cfg, _, _, _, _ = trained
  manifest, _, binary = int8_build
  c = manifest["c"]
  est = memory.estimate(cfg, "int8")
  # Regions R0..R2 hold L^2 + L*d + L*d_i fp16 values: exactly the rule's activation bytes.
  assert c["arena_vs_rule"]["arena_region_bytes"] == est.activation_bytes
  assert c["arena_bytes"] == est.activation_bytes + c["arena_vs_rule"]["arena_scratch_bytes"]
  lam = cfg.num_layers * 4 * cfg.hidden * 2
  assert c["weight_bytes"] == est.weight_bytes - lam + 8 * cfg.num_layers
  longest = ["word " * 100]
  short = ["good"]
  for pattern in ("165", "90"):
    full = run(binary, longest, "--stats", "--paint", pattern).stderr.decode()
    stats = dict(kv.split("=") for kv in full.split())
    assert stats["guard_ok"] == "1"
    assert int(stats["high_water"]) <= c["arena_bytes"]
  # With two paint patterns no byte can hide: at n = L the last probability row ends the arena.
  marks = [int(dict(kv.split("=") for kv in run(binary, longest, "--stats", "--paint", p).stderr.decode().split())
               ["high_water"]) for p in ("165", "90")]
  assert max(marks) == c["arena_bytes"]
  small = dict(kv.split("=") for kv in run(binary, short, "--stats").stderr.decode().split())
  assert int(small["high_water"]) < c["arena_bytes"]


@pytest.mark.parametrize("preset", ["embedder", "embedder_conv"])
def test_baselines_build_and_equal_reference(trained, preset):
  _, _, tok, _, root = trained
  cfg = configs.get_preset(preset, vocab_size=tok.vocab_size, max_len=32, hidden=24, embed_dim=8, conv_kernel=4)
  params = random_params(cfg, 3)
  out = root / f"c_{preset}"
  manifest = export_c.export_c(params, cfg, out, policy="int8", tokenizer_path=tok.model_path)
  texts = make_texts(50, seed=6)[0] + ADVERSARIAL
  lines = run(build(out), texts).stdout.decode().splitlines()
  logits_c = np.array([[float(x) for x in line.split()[1:]] for line in lines], np.float32)
  _, logits_ref = reference.predict(out, tok.encode_batch(texts, max_len=cfg.max_len))
  np.testing.assert_allclose(logits_c, logits_ref, atol=1e-6)
  assert manifest["c"]["arena_bytes"] < memory.estimate(cfg, "int8").activation_bytes  # one L x d buffer less


@pytest.mark.parametrize("policy,classes", [("fp32", 2), ("int8", 2), ("fp32", 3), ("int8", 3)])
def test_mean_pool_and_label_readout_equal_reference_and_jax(trained, policy, classes):
  """A mean-pooling head with the label readout (the text's mean of the token table's last column times a
  weight per class; with 3 classes logit c reads its own of the last 3 columns): C = the NumPy reference;
  in fp32 the reference = JAX, whose readout term is the numpy feature labelcols fits the readout's
  starting weights on."""
  from embbert_jax import labelcols
  _, _, tok, _, root = trained
  cfg = configs.model_config(vocab_size=tok.vocab_size, **{**CFG, "num_layers": 1, "num_labels": classes},
                             head="mean_pool", residual=True, label_readout=True)
  params = random_params(cfg, 4)
  params["head"]["readout"] = np.array([-3.0, 4.0, 2.5][:classes], np.float32)  # large enough to move labels
  out = root / f"c_readout_{policy}_{classes}"
  export_c.export_c(params, cfg, out, policy=policy, tokenizer_path=tok.model_path)
  texts = make_texts(50, seed=7)[0] + ADVERSARIAL
  ids = tok.encode_batch(texts, max_len=cfg.max_len)
  lines = run(build(out), texts).stdout.decode().splitlines()
  logits_c = np.array([[float(x) for x in line.split()[1:]] for line in lines], np.float32)
  _, logits_ref = reference.predict(out, ids)
  np.testing.assert_allclose(logits_c, logits_ref, atol=1e-6)
  if policy == "fp32":
    model = models.build_model(cfg)
    logits_jax = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(logits_jax, logits_ref, atol=1e-5)
    silent = jax.tree.map(lambda a: a, params)
    silent["head"]["readout"] = np.zeros_like(params["head"]["readout"])
    term = logits_jax - np.asarray(model.apply({"params": silent}, jnp.asarray(ids)))
    k = configs.label_width(classes)
    feature = labelcols.label_feature(ids, params["encoder"]["embedder"]["token"]["embedding"][:, -k:])
    assert feature.shape == (len(texts), k)
    np.testing.assert_allclose(term, feature * params["head"]["readout"][None, :], atol=1e-5)
    if classes > 2:  # logit c moves with column c alone: not the last column's feature for every logit
      last = labelcols.label_feature(ids, params["encoder"]["embedder"]["token"]["embedding"][:, -1:])
      assert not np.allclose(term, last * params["head"]["readout"][None, :], atol=1e-3)
    assert np.abs(term).max() > 0.5


def test_headline_int8_fits_781kB():
  """The paper's EmbBERT-Q: flash weights + the arena (rule regions + scratch rows) <= 781 kB."""
  cfg = configs.get_preset("embbert")
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  rng = np.random.RandomState(0)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  from embbert_jax import quantize
  arrays = export.export_arrays(quantize.quantize_params(params, "int8"))
  _, weight_bytes = export_c.weights_c(cfg, arrays, ["0", "1"])
  rule = export_c.plan_vs_rule(cfg, "int8")
  assert rule["arena_region_bytes"] == memory.estimate(cfg, "int8").activation_bytes == 262_144
  assert weight_bytes + rule["arena_bytes"] <= 781_000


def test_cli_writes_the_folder_and_refuses_unsupported_archs(trained, tmp_path, capsys):
  cfg, _, _, ckpt, _ = trained
  assert export.main([str(ckpt), "--format", "c", "--out", str(tmp_path / "c"), "--labels", "no,yes"]) == 0
  manifest = json.loads((tmp_path / "c" / export.MANIFEST).read_text())
  assert manifest["c"]["labels"] == ["no", "yes"] and (tmp_path / "c" / "Makefile").is_file()
  assert "weights + arena" in capsys.readouterr().out
  bert = configs.get_preset("bert", vocab_size=cfg.vocab_size, max_len=16)
  bad = export.save_model(tmp_path / "bert", random_params(bert), bert, tokenizer_path=ckpt / export.TOKENIZER_FILE)
  assert export.main([str(bad), "--format", "c", "--out", str(tmp_path / "c2")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "arch" in err
  pooled = configs.get_preset("embedder", vocab_size=cfg.vocab_size, max_len=16, hidden=16, embed_dim=4,
                              pool_over_pad=True)
  bad = export.save_model(tmp_path / "pooled", random_params(pooled), pooled,
                          tokenizer_path=ckpt / export.TOKENIZER_FILE)
  assert export.main([str(bad), "--format", "c", "--out", str(tmp_path / "c3")]) == 2
  assert "pool_over_pad" in capsys.readouterr().err


def test_normaliser_skips_only_code_points_that_map_to_themselves():
  import unicodedata
  skipped = set(range(0x110000)) - set(export_tokenizer._ASSIGNED_RANGE)
  assert all(unicodedata.category(chr(cp)) in ("Cn", "Co") for cp in skipped)


def test_tokenizer_json_gives_python_ids(trained, int8_build):
  tokenizers = pytest.importorskip("tokenizers", reason="tokenizer.json needs the export extra (tokenizers)")
  cfg, _, tok, _, _ = trained
  hf = tokenizers.Tokenizer.from_file(str(int8_build[1] / "tokenizer.json"))
  # Known difference: Metaspace adds no prefix to a text that starts with a literal U+2581 and keeps
  # trailing ones, which sentencepiece drops; such texts are left out here (the C runtime matches them).
  texts = make_texts(500, seed=7)[0] + [t for t in ADVERSARIAL if "\u2581" not in t]
  assert [e.ids for e in hf.encode_batch(texts)] == py_ids(tok, cfg, texts)


def test_predict_cli_from_model_and_export(trained, int8_build, tmp_path, capsys):
  from embbert_jax import predict
  cfg, params, tok, ckpt, _ = trained
  texts = make_texts(40, seed=8)[0] + ["", "A Gripping Film!"]
  f = tmp_path / "texts.txt"
  f.write_text("\n".join(texts) + "\n")
  assert predict.main([str(int8_build[1]), "--text-file", str(f)]) == 0
  lines = capsys.readouterr().out.splitlines()
  c_lines = run(int8_build[2], texts).stdout.decode().splitlines()
  assert [x.split()[0] for x in lines] == [x.split()[0] for x in c_lines]  # the export runs the int8 reference
  probs = np.array([[float(v) for v in x.split()[1:]] for x in lines])
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  assert predict.main([str(ckpt), "--text-file", str(f)]) == 0  # a saved model runs JAX
  logits = models.build_model(cfg).apply({"params": params}, jnp.asarray(tok.encode_batch(texts, max_len=cfg.max_len)))
  got = capsys.readouterr().out.splitlines()
  assert [x.split()[0] for x in got] == [str(i) for i in np.asarray(logits).argmax(1)]
  assert predict.main([str(tmp_path / "missing")]) == 2
  assert capsys.readouterr().err.count("\n") == 1


def test_onnx_export_agrees_with_jax(trained, tmp_path):
  pytest.importorskip("jax2onnx", reason="--format onnx needs jax2onnx (pip install --no-deps jax2onnx==0.17.1)")
  ort = pytest.importorskip("onnxruntime", reason="--format onnx needs the export extra (onnxruntime)")
  pytest.importorskip("tokenizers", reason="--format onnx writes tokenizer.json (the export extra)")
  cfg, params, tok, ckpt, _ = trained
  assert export.main([str(ckpt), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
  sess = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
  texts = make_texts(64, seed=9)[0]
  ids = tok.encode_batch(texts, max_len=cfg.max_len)
  got = np.concatenate([sess.run(["logits"], {"input_ids": ids[i:i + 1]})[0] for i in range(len(ids))])
  want = np.asarray(models.build_model(cfg).apply({"params": params}, jnp.asarray(ids)))
  np.testing.assert_allclose(got, want, atol=1e-5)
  # The default sweep space's head: mean pooling, the identity path and the label readout.
  cfg = configs.model_config(vocab_size=tok.vocab_size, **{**CFG, "num_layers": 1}, head="mean_pool",
                             residual=True, label_readout=True)
  params = random_params(cfg, 5)
  params["head"]["readout"] = np.array([-3.0, 4.0], np.float32)
  saved = export.save_model(tmp_path / "readout", params, cfg, tokenizer_path=tok.model_path)
  assert export.main([str(saved), "--format", "onnx", "--out", str(tmp_path / "onnx_readout")]) == 0
  sess = ort.InferenceSession(str(tmp_path / "onnx_readout" / "model.onnx"), providers=["CPUExecutionProvider"])
  got = np.concatenate([sess.run(["logits"], {"input_ids": ids[i:i + 1]})[0] for i in range(len(ids))])
  want = np.asarray(models.build_model(cfg).apply({"params": params}, jnp.asarray(ids)))
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow  # tensorflow's conversion takes ~40 s
@pytest.mark.parametrize("policy", ["fp32", "int8"])
def test_tflite_export_builtin_ops_and_agreement(trained, tmp_path, policy):
  pytest.importorskip("tensorflow", reason="--format tflite needs tensorflow-cpu")
  pytest.importorskip("ai_edge_litert", reason="--format tflite needs ai-edge-litert")
  from embbert_jax import export_tflite
  cfg, params, tok, _, _ = trained
  ids = tok.encode_batch(make_texts(200, seed=10)[0], max_len=cfg.max_len)
  m = export_tflite.export_tflite(params, cfg, tmp_path, policy=policy, check_ids=ids)
  assert "FULLY_CONNECTED" in m["builtin_ops"] and not any(op.startswith("FLEX") for op in m["builtin_ops"])
  if policy == "fp32":
    assert m["litert_vs_jax_max_abs"] < 1e-4 and m["litert_vs_jax_label_agreement"] == 1.0
  else:  # LiteRT's int8 PTQ (int8 activations too) is its own policy: measured 0.845 here, not asserted
    assert {"QUANTIZE", "DEQUANTIZE"} & set(m["builtin_ops"])


@pytest.mark.slow  # trains nano on rt_polarity (cached data) and runs the reference on the whole test split
def test_rt_polarity_test_split_agreement(tmp_path):
  import importlib.util
  from embbert_jax import train
  cfg = train.get_config("nano", max_len=64)
  cfg.task, cfg.steps, cfg.learning_rate, cfg.wandb.mode = "rt_polarity", 150, 1e-3, "disabled"
  train.train_and_evaluate(cfg, tmp_path / "run")
  spec = importlib.util.spec_from_file_location(
      "c_runtime", export_c.Path(__file__).parents[1] / "benchmarks" / "c_runtime.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  res = bench.measure(str(tmp_path / "run"), "rt_polarity", "test", ["int8"], tmp_path / "c")
  r = res["policies"]["int8"]
  assert r["ids_identical"] == res["texts"] >= 1000
  assert r["labels_vs_reference"] == 1.0 and r["labels_vs_jax"] >= 0.99
  assert r["guard_ok"] and r["high_water_bytes"] <= r["arena_bytes"]
