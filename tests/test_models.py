"""Model behaviour: masks, causality, segments, no NaN, and a gradient step for every architecture."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embbert_jax import configs, conv, models
from embbert_jax.configs import CLS_ID, PAD_ID, SEP_ID

# Every architecture shrunk so that compiling all of them stays fast on 2 cores.
SMALL = dict(vocab_size=64, max_len=16, num_labels=3)
SMALL_ARCH = {
    "embbert": dict(hidden=16, embed_dim=4, conv_kernel=4, num_layers=2),
    "bert": dict(arch="bert", hidden=16, ffn_dim=24, num_heads=2, num_layers=2, embedder="standard"),
    "mamba": dict(arch="mamba", hidden=8, d_state=3, d_conv=3, dt_rank=2, num_layers=2, embedder="standard",
                  head="rms_pool"),
    "embedder": dict(arch="embedder", hidden=16, embed_dim=4, num_layers=0, head="rms_pool"),
    "embedder_conv": dict(arch="embedder_conv", hidden=16, embed_dim=4, conv_kernel=4, num_layers=0,
                          head="rms_pool"),
    "nanobert": dict(arch="nanobert", hidden=16, embed_dim=4, ffn_dim=24, num_heads=2, num_layers=2),
    "nanobert_efficient": dict(arch="nanobert_efficient", hidden=16, embed_dim=4, ffn_dim=12, num_layers=2),
    "embbert_e2_shift": dict(hidden=16, embed_dim=4, conv_kernel=4, num_layers=1, conv_expansion=2,
                             conv_impl="shift"),
    "embbert_residual_sum": dict(hidden=16, embed_dim=4, conv_kernel=4, num_layers=2, residual=True,
                                 aggregation="sum"),
    "embbert_no_attention": dict(hidden=16, embed_dim=4, conv_kernel=4, num_layers=1, use_attention=False),
    "embbert_no_conv": dict(hidden=16, embed_dim=4, num_layers=1, use_conv=False),
}


def small(name, **kw):
  return configs.model_config(**{**SMALL, **SMALL_ARCH[name], **kw})


def batch(cfg, lengths=(16, 9, 1), seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, cfg.vocab_size, (len(lengths), cfg.max_len)).astype(np.int32)
  ids[:, 0] = CLS_ID
  for i, n in enumerate(lengths):
    ids[i, n:] = PAD_ID
  return jnp.asarray(ids)


@pytest.mark.parametrize("name", SMALL_ARCH)
def test_real_positions_ignore_padding_and_no_nan(name):
  """Outputs at real positions are the same whatever the pad positions hold (given the mask)."""
  cfg = small(name)
  clf = models.Classifier(cfg)
  ids = batch(cfg)
  mask = ids != PAD_ID
  params = jax.jit(clf.init)(jax.random.key(0), ids)
  garbage = jnp.where(mask, ids, jax.random.randint(jax.random.key(1), ids.shape, 5, cfg.vocab_size))
  enc = jax.jit(lambda x: models.Encoder(cfg).apply({"params": params["params"]["encoder"]}, x, mask))
  h_clean, h_garbage = enc(ids), enc(garbage)
  assert not jnp.isnan(h_clean).any() and not jnp.isnan(h_garbage).any()
  np.testing.assert_allclose(np.where(mask[..., None], h_clean, 0), np.where(mask[..., None], h_garbage, 0),
                             rtol=1e-5, atol=1e-5)
  logits = jax.jit(lambda x: clf.apply(params, x, mask))
  np.testing.assert_allclose(logits(ids), logits(garbage), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["embbert", "bert", "nanobert_efficient"])
def test_fully_padded_rows_give_no_nan(name):
  cfg = small(name)
  ids = jnp.zeros((2, cfg.max_len), jnp.int32)  # every position is [PAD]
  clf = models.Classifier(cfg)
  p = jax.jit(clf.init)(jax.random.key(0), ids)
  out, grads = jax.jit(jax.value_and_grad(lambda p: clf.apply(p, ids).sum()))(p)
  assert jnp.isfinite(out)
  assert all(jnp.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


def test_masked_softmax_rows():
  scores = jax.random.normal(jax.random.key(0), (1, 1, 4, 4))
  mask = jnp.array([[True, True, False, False]])
  p = models.masked_softmax(scores, mask)
  np.testing.assert_allclose(p[0, 0, :2].sum(-1), 1.0, rtol=1e-6)
  assert (p[0, 0, :, 2:] == 0).all()  # PAD keys get no weight
  assert (p[0, 0, 2:] == 0).all()  # PAD query rows are all zero


CONV_IMPLS = ["xla", "shift", "shift_vjp", "toeplitz"]


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("mult", [1, 2])
def test_causal_conv_is_causal_through_gradients(impl, mult):
  k, length, chans = 3, 8, 4
  kernel = jax.random.normal(jax.random.key(0), (k, 1, chans * mult))
  bias = jnp.zeros((chans * mult,))
  x = jax.random.normal(jax.random.key(1), (1, length, chans))
  for t in range(length):
    g = jax.grad(lambda x: conv.causal_depthwise_conv(x, kernel, bias, impl)[0, t].sum())(x)
    assert (g[0, t + 1:] == 0).all(), f"output {t} depends on later inputs"
    assert (g[0, : max(0, t - k + 1)] == 0).all(), f"output {t} sees further back than the kernel"
    assert (g[0, t] != 0).any()


def test_conv_lowerings_agree_and_follow_group_order():
  k, chans, mult = 5, 3, 2
  kernel = jax.random.normal(jax.random.key(0), (k, 1, chans * mult))
  bias = jax.random.normal(jax.random.key(2), (chans * mult,))
  x = jax.random.normal(jax.random.key(1), (2, 10, chans))
  a = conv.causal_depthwise_conv(x, kernel, bias, "xla")
  for impl in CONV_IMPLS[1:]:
    np.testing.assert_allclose(a, conv.causal_depthwise_conv(x, kernel, bias, impl), rtol=1e-5, atol=1e-5)
  # Output channel o reads input channel o // mult (PyTorch grouped conv); check one by hand.
  o, t = 3, 6
  by_hand = sum(kernel[j, 0, o] * x[0, t - (k - 1) + j, o // mult] for j in range(k)) + bias[o]
  np.testing.assert_allclose(a[0, t, o], by_hand, rtol=1e-5)


# (K, L, mult): K = 1; L shorter than K; L not a multiple of the Toeplitz block; K - 1 spanning two and
# three earlier blocks; the headline K = 32 with the auto block.
@pytest.mark.parametrize("k,length,mult", [(1, 7, 1), (8, 5, 1), (4, 37, 2), (20, 37, 1), (40, 50, 1),
                                           (32, 96, 1)])
def test_conv_lowerings_agree_in_outputs_and_gradients(k, length, mult):
  chans = 3
  kernel = jax.random.normal(jax.random.key(0), (k, 1, chans * mult))
  bias = jax.random.normal(jax.random.key(2), (chans * mult,))
  x = jax.random.normal(jax.random.key(1), (2, length, chans))
  probe = jax.random.normal(jax.random.key(3), (2, length, chans * mult))

  def value_and_grads(impl):
    loss = lambda x, w, b: (conv.causal_depthwise_conv(x, w, b, impl) * probe).sum()
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, kernel, bias)

  ref = value_and_grads("xla")
  for impl in CONV_IMPLS[1:]:
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(value_and_grads(impl))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=impl)


@pytest.mark.parametrize("block", [1, 3, 4, 16])
def test_toeplitz_any_block_size_matches_shift(block):
  k, chans = 9, 4
  kernel = jax.random.normal(jax.random.key(0), (k, 1, chans))
  x = jax.random.normal(jax.random.key(1), (2, 23, chans))
  zero = jnp.zeros((chans,))
  np.testing.assert_allclose(conv._toeplitz_conv(x, kernel[:, 0], block),
                             conv.causal_depthwise_conv(x, kernel, zero, "shift"), rtol=1e-5, atol=1e-5)


def test_encoder_gives_the_same_outputs_and_gradients_with_every_lowering():
  """The EmbBERT encoder with K = 20: every lowering and "auto" (shift_vjp on CPU, xla elsewhere) agree."""
  ids = batch(small("embbert"), lengths=(16, 9, 1) * 22)
  cpu = jax.default_backend() == "cpu"
  assert conv.resolve_conv_impl("auto") == ("shift_vjp" if cpu else "xla")
  assert conv.resolve_conv_impl("auto", multiplier=2) == ("toeplitz" if cpu else "xla")
  mask = ids != PAD_ID
  out = {}
  for impl in CONV_IMPLS + ["auto"]:
    cfg = small("embbert", conv_kernel=20, num_layers=1, conv_impl=impl)
    enc = models.Encoder(cfg)
    p = enc.init(jax.random.key(0), ids)
    loss = lambda p: (jnp.where(mask[..., None], enc.apply(p, ids, mask), 0) ** 2).sum()
    out[impl] = jax.jit(jax.value_and_grad(loss))(p)
  for impl in CONV_IMPLS[1:] + ["auto"]:
    for a, b in zip(jax.tree_util.tree_leaves(out["xla"]), jax.tree_util.tree_leaves(out[impl])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=impl)


@pytest.mark.parametrize("block", [1, 4, 32])
def test_conv_kernel_grad_matches_lag_by_lag_sums(block):
  """The matmul form of dkernel against its definition, for kernels shorter and longer than a block."""
  for k, length in [(1, 5), (9, 23), (40, 37)]:
    x = jax.random.normal(jax.random.key(k), (2, length, 3))
    g = jax.random.normal(jax.random.key(k + 1), (2, length, 3))
    xp = jnp.pad(x, ((0, 0), (k - 1, 0), (0, 0)))
    want = jnp.stack([(xp[:, j:j + length] * g).sum((0, 1)) for j in range(k)])
    np.testing.assert_allclose(conv._conv_kernel_grad(x, g, k, block), want, rtol=1e-5, atol=1e-5)


def test_dropout_keeps_the_rate_and_the_mean():
  """The 16-bit dropout: a (rate) share of zeros, survivors scaled by 1 / the exact keep rate, the same
  mask for the same key, nothing dropped when deterministic; odd last axes take the one-word-per-element
  path."""
  class Drop(nn.Module):
    @nn.compact
    def __call__(self, x, det):
      return models.dropout(self, x, 0.1, det)

  for shape in [(64, 256, 256), (8, 301, 301)]:
    x = jnp.ones(shape)
    y = Drop().apply({}, x, False, rngs={"dropout": jax.random.key(0)})
    zeros = float((y == 0).mean())
    assert abs(zeros - 0.1) < 0.002, zeros
    np.testing.assert_allclose(float(y.mean()), 1.0, atol=0.005)
    np.testing.assert_allclose(float(y.max()), 65536 / (65536 - 6554), rtol=1e-6)
    again = Drop().apply({}, x, False, rngs={"dropout": jax.random.key(0)})
    assert (again == y).all()
    other = Drop().apply({}, x, False, rngs={"dropout": jax.random.key(1)})
    assert (other != y).any()
    assert (Drop().apply({}, x, True) == x).all()


def test_unknown_conv_lowering_raises():
  with pytest.raises(ValueError, match="toeplitz"):
    conv.causal_depthwise_conv(jnp.zeros((1, 4, 2)), jnp.zeros((3, 1, 2)), jnp.zeros((2,)), "fft")


def test_conv_change_after_t_leaves_output_up_to_t():
  cfg = small("embbert")
  enc = models.Encoder(cfg.copy_and_resolve_references())
  with cfg.unlocked():
    cfg.use_attention = False  # the conv branch alone is causal end to end
  enc = models.Encoder(cfg)
  ids = batch(cfg, lengths=(16,))
  p = enc.init(jax.random.key(0), ids)
  changed = ids.at[0, 10:].set(7)
  np.testing.assert_allclose(enc.apply(p, ids)[0, :10], enc.apply(p, changed)[0, :10], rtol=1e-6)
  assert not np.allclose(enc.apply(p, ids)[0, 10:], enc.apply(p, changed)[0, 10:])


def test_segment_ids():
  ids = jnp.array([[CLS_ID, 7, 8, PAD_ID, PAD_ID],
                   [CLS_ID, 7, SEP_ID, 9, SEP_ID],
                   [CLS_ID, SEP_ID, 9, SEP_ID, PAD_ID]])
  np.testing.assert_array_equal(models.segment_ids(ids), [[1, 1, 1, 0, 0], [1, 1, 2, 2, 2], [1, 2, 2, 2, 0]])


def test_init_follows_reference():
  cfg = small("embbert")
  p = models.init_params(cfg, jax.random.key(0))
  emb = p["encoder"]["embedder"]
  assert (emb["token"]["embedding"][PAD_ID] == 0).all()
  assert 0.8 < float(emb["token"]["embedding"][5:].std()) < 1.2  # N(0, 1)
  q = p["encoder"]["layer_0"]["attention"]["q"]["kernel"]
  assert float(jnp.abs(q).max()) <= 1 / np.sqrt(cfg.hidden)  # U(+-1/sqrt(fan_in))
  lam = p["encoder"]["layer_0"]["aggregate"]["lambda_q1"]
  assert float(lam.std()) < 0.3
  assert (p["encoder"]["layer_0"]["norm"]["scale"] == 1).all()


@pytest.mark.parametrize("name", SMALL_ARCH)
def test_gradient_step_is_finite_and_changes_loss(name):
  cfg = small(name)
  clf = models.Classifier(cfg)
  ids = batch(cfg)
  labels = jnp.array([0, 1, 2])
  params = jax.jit(clf.init)(jax.random.key(0), ids)

  @jax.jit
  def loss_fn(p, rng):
    logits = clf.apply(p, ids, train=True, rngs={"dropout": rng})
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

  loss0, grads = jax.jit(jax.value_and_grad(loss_fn))(params, jax.random.key(1))
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(jnp.isfinite(g).all() for g in leaves)
  assert any(jnp.abs(g).sum() > 0 for g in leaves)
  new = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
  assert loss_fn(new, jax.random.key(1)) < loss0


def test_pretrainer_shapes():
  cfg = small("embbert")
  m = models.build_model(cfg, "pretrain")
  ids = batch(cfg)
  p = m.init(jax.random.key(0), ids)
  mlm, nsp = m.apply(p, ids)
  assert mlm.shape == (3, cfg.max_len, cfg.vocab_size) and nsp.shape == (3, 2)
  assert set(p["params"]) == {"encoder", "head"}


def test_dropout_only_in_training():
  cfg = small("embbert", dropout=0.5)
  clf = models.Classifier(cfg)
  ids = batch(cfg)
  p = clf.init(jax.random.key(0), ids)
  a = clf.apply(p, ids, train=True, rngs={"dropout": jax.random.key(1)})
  b = clf.apply(p, ids, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(clf.apply(p, ids), clf.apply(p, ids))


def test_bf16_compute_runs():
  cfg = small("embbert", dtype="bfloat16")
  clf = models.Classifier(cfg)
  ids = batch(cfg)
  p = clf.init(jax.random.key(0), ids)
  assert jax.tree_util.tree_leaves(p)[0].dtype == jnp.float32  # params stay f32
  out = clf.apply(p, ids)
  assert out.dtype == jnp.float32 and jnp.isfinite(out).all()


@pytest.mark.parametrize("bad", [dict(arch="gpt"), dict(use_attention=False, use_conv=False),
                                 dict(conv_expansion=1.5), dict(arch="bert", num_heads=3, hidden=16, ffn_dim=4)])
def test_bad_configs_raise_one_line(bad):
  with pytest.raises(configs.ConfigError) as e:
    configs.model_config(**bad)
  assert "\n" not in str(e.value)


def test_overrides_and_unknown_preset():
  c = configs.apply_overrides(configs.get_preset("embbert"), ["hidden=96", "--config.residual=true",
                                                              "conv_expansion=2"])
  assert c.hidden == 96 and c.residual is True and c.conv_expansion == 2.0
  with pytest.raises(configs.ConfigError, match="known presets"):
    configs.get_preset("huge")
  with pytest.raises(configs.ConfigError, match="unknown config field"):
    configs.apply_overrides(c, ["hiden=3"])


def test_model_config_is_frozen_hashable_and_built_once():
  cd = configs.get_preset("nano", hidden=96)
  m = configs.ModelConfig.from_dict(cd)
  assert m == configs.ModelConfig.from_dict(cd.to_dict()) and hash(m) == hash(configs.ModelConfig.from_dict(cd))
  assert configs.ModelConfig.from_dict(m) is m and m.to_dict() == cd.to_dict()
  assert configs.config_hash(m) == configs.config_hash(cd)  # ledger hashes do not depend on the type
  with pytest.raises(dataclasses.FrozenInstanceError):
    m.hidden = 3
  wider = m.replace(conv_expansion=2)  # a new config; ints widen to float fields as ConfigDict widens them
  assert wider.conv_expansion == 2.0 and m.conv_expansion == 1.0 and wider != m
  with pytest.raises(configs.ConfigError, match="unknown model field 'hiden'"):
    configs.ModelConfig.from_dict({"hiden": 3})
  with pytest.raises(configs.ConfigError, match="expects int"):
    configs.ModelConfig.from_dict({"hidden": "96"})
  with pytest.raises(configs.ConfigError):
    m.replace(use_attention=False, use_conv=False)  # validated like any other config
  assert set(configs.FIELD_TYPES) == set(configs.model_config().keys())  # the dataclass is the one table


def test_set_field_is_the_one_setter():
  from embbert_jax import train
  cfg = train.get_config("nano")
  configs.set_field(cfg, "model.hidden", "96")  # a command-line string, parsed to the field's type
  configs.set_field(cfg, "learning_rate", 1)  # a typed value; ints widen to a float field
  configs.set_field(cfg, "pretrain.steps", 7)
  assert cfg.model.hidden == 96 and cfg.learning_rate == 1.0 and type(cfg.learning_rate) is float
  assert cfg.pretrain.steps == 7
  with pytest.raises(configs.UnknownField, match="fields here"):
    configs.set_field(cfg, "model.hiden", 3)
  with pytest.raises(configs.ConfigError, match="bad value for 'model.hidden'"):
    configs.set_field(cfg, "model.hidden", "wide")
  copy = configs.with_fields(cfg, {"model.num_labels": 4})
  assert copy.model.num_labels == 4 and cfg.model.num_labels == 2  # the caller's config is untouched


# ------------------------------------------------------------- the published baselines (spec 8.7, issue 15)

# The baseline presets shrunk, keeping every preset value not named here (head, norm_eps, ...).
SHRINK = {
    "bert": dict(hidden=16, ffn_dim=24),
    "nanobert": dict(hidden=16, embed_dim=4, ffn_dim=24),
    "mamba": dict(hidden=8, d_state=3, d_conv=3, dt_rank=2, num_layers=2),
    "embedder": dict(hidden=16, embed_dim=4),
    "embedder_conv": dict(hidden=16, embed_dim=4, conv_kernel=4),
}


def shrunk(preset, **kw):
  return configs.get_preset(preset, **{**SMALL, **SHRINK[preset], **kw})


def test_mamba_logits_depend_on_the_text_after_position_0():
  """A causal model read at position 0 sees only [CLS]; the preset's RMS pooling sees the whole text."""
  cfg = shrunk("mamba")
  ids = batch(cfg, lengths=(16, 12))
  other = ids.at[:, 1:].set(jnp.where(ids[:, 1:] == PAD_ID, PAD_ID, (ids[:, 1:] + 7) % 59 + 5))
  both = jnp.concatenate([ids, other])
  for head, changes in (("rms_pool", True), ("cls", False)):
    clf = models.Classifier(configs.model_config(**{**cfg.to_dict(), "head": head}))
    logits = np.asarray(jax.jit(lambda x: clf.apply(clf.init(jax.random.key(0), x), x))(both))
    diff = np.abs(logits[:2] - logits[2:]).max(axis=-1)
    assert (diff > 1e-4).all() if changes else (diff == 0).all(), (head, diff)
  assert configs.PRESETS["mamba"]["head"] == "rms_pool"
  assert configs.PUBLISHED["mamba"] == dict(pool_over_pad=True)  # the authors' RMSClassifier


def test_mamba_initial_step_sizes_are_log_uniform_in_the_reference_range():
  cfg = configs.get_preset("mamba", vocab_size=64, max_len=16)  # the preset's widths: 64 channels x 5 layers
  p = jax.jit(lambda k: models.init_params(cfg, k))(jax.random.key(0))["encoder"]
  dt = np.concatenate([np.asarray(jax.nn.softplus(p[f"layer_{i}"]["mixer"]["dt_proj"]["bias"]))
                       for i in range(cfg.num_layers)])
  assert dt.shape == (cfg.num_layers * configs.mamba_inner(cfg),)
  assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
  # Log-uniform: about half below the geometric middle 0.01, and both decades filled.
  assert 0.35 < (dt < 0.01).mean() < 0.65
  assert dt.min() < 0.002 and dt.max() > 0.05
  kernel = np.asarray(p["layer_0"]["mixer"]["dt_proj"]["kernel"])
  assert np.abs(kernel).max() <= cfg.dt_rank ** -0.5  # dt_init="random", dt_scale 1


def _np_rms(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _np_dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_nanobert_efficient_layer(p, x, mask, eps):
  """The authors' NanoBERTEfficient layer in NumPy: x <- RMSNorm(x); x <- out(softmax(q(x) x^T / sqrt d)
  x) + x (keys masked with -inf on both sides, NaN rows -> 0); x <- RMSNorm(x); x <- FFN(x) + x."""
  u = _np_rms(x, np.asarray(p["norm1"]["scale"], np.float64), eps)
  scores = _np_dense(p["attention"]["q"], u) @ u.transpose(0, 2, 1) / np.sqrt(x.shape[-1])
  scores = np.where(mask[:, :, None] & mask[:, None, :], scores, -np.inf)
  with np.errstate(invalid="ignore"):
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    w = np.nan_to_num(w / w.sum(axis=-1, keepdims=True))
  h = _np_dense(p["attention"]["out"], w @ u) + u
  v = _np_rms(h, np.asarray(p["norm2"]["scale"], np.float64), eps)
  f = _np_dense(p["ffn_in"], v)
  return _np_dense(p["ffn_out"], f / (1 + np.exp(-f))) + v


def test_nanobert_efficient_layer_is_the_published_formula():
  cfg = small("nanobert_efficient")
  layer = models.EfficientTransformerLayer(cfg)
  ids = batch(cfg, lengths=(16, 9, 1))
  mask = ids != PAD_ID
  x = jax.random.normal(jax.random.key(1), (3, cfg.max_len, cfg.hidden)) * 3
  params = jax.jit(layer.init, static_argnums=3)(jax.random.key(0), x, mask, True)
  # Non-trivial norm scales, so a swapped or missing norm shows.
  params = jax.tree_util.tree_map_with_path(
      lambda path, v: v * (1 + 0.5 * jax.random.uniform(jax.random.key(len(str(path))), v.shape))
      if "scale" in str(path) else v, params)
  got = np.asarray(jax.jit(layer.apply, static_argnums=3)(params, x, mask, True))
  want = _np_nanobert_efficient_layer(params["params"], np.asarray(x, np.float64), np.asarray(mask),
                                      cfg.norm_eps)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def _pad_wider(ids, width):
  return jnp.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=PAD_ID)


def _real_outputs_with_more_padding(cfg, fn):
  """(fn at width 10, fn at width 16) for the same sentences: padding added at the right."""
  ids = batch(cfg, lengths=(10, 6, 3))[:, :10]
  return fn(ids), fn(_pad_wider(ids, cfg.max_len))


@pytest.mark.parametrize("preset", ["bert", "nanobert"])
def test_attend_to_pad_lets_padding_change_real_positions(preset):
  for published in (False, True):
    cfg = shrunk(preset, attend_to_pad=published)
    enc = models.Encoder(cfg)
    params = jax.jit(enc.init)(jax.random.key(0), batch(cfg))
    narrow, wide = _real_outputs_with_more_padding(cfg, lambda x: np.asarray(jax.jit(enc.apply)(params, x)))
    mask = np.asarray(batch(cfg, lengths=(10, 6, 3))[:, :10] != PAD_ID)
    diff = np.abs(np.where(mask[..., None], narrow - wide[:, :10], 0)).max(axis=(1, 2))
    assert configs.padding_invariant(cfg) == (not published)  # what bucketed evaluation relies on
    if published:  # every sentence here is followed by padding in the wide batch
      assert (diff > 1e-4).all(), diff
    else:
      assert (diff < 1e-5).all(), diff
  assert configs.PUBLISHED[preset] == dict(attend_to_pad=True)


@pytest.mark.parametrize("preset", ["embedder", "embedder_conv"])  # mamba shares the head
def test_pool_over_pad_lets_padding_change_the_logits(preset):
  for published in (False, True):
    cfg = shrunk(preset, pool_over_pad=published)
    clf = models.Classifier(cfg)
    params = jax.jit(clf.init)(jax.random.key(0), batch(cfg))
    narrow, wide = _real_outputs_with_more_padding(cfg, lambda x: np.asarray(jax.jit(clf.apply)(params, x)))
    diff = np.abs(narrow - wide).max(axis=-1)
    assert configs.padding_invariant(cfg) == (not published)
    if published:
      assert (diff > 1e-4).all(), diff
    else:
      assert (diff < 1e-5).all(), diff
  assert configs.PUBLISHED[preset] == dict(pool_over_pad=True)


def test_published_switches_are_off_by_default_and_on_in_the_baselines_study():
  from embbert_jax import study as study_lib
  assert not any(configs.get_preset(p).attend_to_pad or configs.get_preset(p).pool_over_pad
                 for p in configs.PRESETS)
  study = study_lib.load_study("baselines_2mb", mode="quick")
  for arm in study_lib.arm_list(study):
    cfg = study_lib.arm_config(study, arm, "sms_spam")
    switches = configs.PUBLISHED.get(cfg.model.arch, {})
    assert all(cfg.model[k] == v for k, v in switches.items()), arm["name"]
    assert cfg.bucket_window == (0 if switches else 64), arm["name"]  # one padded width per run
