"""PTQ storage (error bounds, classes per policy), fake-quant, STE, LoRA, and adaptation after PTQ."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from embbert_jax import configs, memory, models, quantize
from embbert_jax.configs import CLS_ID

TINY = dict(vocab_size=64, max_len=16, hidden=16, embed_dim=4, conv_kernel=4, num_layers=2)


@pytest.fixture(scope="module")
def tiny():
  cfg = configs.model_config(**TINY)
  return cfg, jax.jit(lambda k: models.init_params(cfg, k))(jax.random.key(0))


@pytest.mark.parametrize("shape,std", [((64, 32), 3.0), ((4, 1, 48), 0.02), ((300, 8), 1e-6), ((7,), 50.0)])
def test_roundtrip_within_half_step(shape, std):
  x = np.random.RandomState(0).normal(0, std, shape).astype(np.float32)
  if len(shape) > 1:
    x[..., 1] = 0.0  # an all-zero channel still gets a usable scale
  t = quantize.quantize_tensor(x)
  q, scale = np.asarray(t.q), np.asarray(t.scale)
  assert q.dtype == np.int8 and q.shape == x.shape and np.abs(q.astype(int)).max() <= quantize.QMAX
  assert scale.dtype == np.float16 and scale.shape == (shape[-1],) and (scale > 0).all()
  s = scale.astype(np.float32)
  jitted = jax.jit(quantize.quantize_tensor)(x)  # quantize_params runs it compiled: same integers
  assert np.array_equal(np.asarray(jitted.q), q) and np.array_equal(np.asarray(jitted.scale), scale)
  err = np.abs(x - np.asarray(quantize.dequantize_tensor(t)))
  assert (err <= s / 2 * (1 + 1e-6) + 1e-12).all()
  # The scale is tight: each channel with data uses (nearly) the full range.
  big = np.abs(x).max(axis=tuple(range(x.ndim - 1))) > 1e-3
  assert (np.abs(q).max(axis=tuple(range(x.ndim - 1)))[big] >= 126).all()


@pytest.mark.parametrize("policy", ["int8", "int8_full", "fp16", "fp32"])
def test_classes_quantized_per_policy(tiny, policy):
  _, params = tiny
  pol = memory.get_policy(policy)
  qp = quantize.quantize_params(params, policy)
  assert qp.policy == policy
  leaves = jax.tree_util.tree_leaves_with_path(qp.tree, is_leaf=lambda x: isinstance(x, quantize.QTensor))
  seen = set()
  for path, leaf in leaves:
    keys = tuple(k.key for k in path)
    kind = memory.classify(keys, leaf.q.shape if isinstance(leaf, quantize.QTensor) else leaf.shape)
    seen.add(kind)
    if pol.bytes_for(kind) == 1 and kind != memory.OTHER:
      assert isinstance(leaf, quantize.QTensor), keys
    else:
      assert not isinstance(leaf, quantize.QTensor), keys
      assert leaf.dtype == {2: jnp.float16, 4: jnp.float32}[pol.bytes_for(kind)], keys
  assert seen == set(memory.CLASSES)
  expect = {"int8": {memory.DENSE}, "int8_full": {memory.DENSE, memory.CONV, memory.EMBED}}.get(policy, set())
  got = {memory.classify(tuple(k.key for k in path), leaf.q.shape) for path, leaf in leaves
         if isinstance(leaf, quantize.QTensor)}
  assert got == expect


def test_dequantize_is_the_stored_model_and_idempotent(tiny):
  _, params = tiny
  for policy in ("int8", "int8_full"):
    fq = quantize.fake_quant(params, policy)
    again = quantize.fake_quant(fq, policy)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), fq, again))
    # Small but real: PTQ moves the weights by at most half a step.
    diff = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), params, fq))
    assert 0 < max(diff) < 0.05


def test_ste_forward_is_fake_quant_and_gradient_is_identity(tiny):
  _, params = tiny
  fq = quantize.fake_quant(params, "int8_full")
  ste = jax.jit(quantize.ste_fake_quant, static_argnums=1)(params, "int8_full")
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.allclose(a, b, atol=1e-7)), fq, ste))
  w = jax.tree.map(lambda x: jnp.full_like(x, 3.0), params)
  grads = jax.jit(jax.grad(lambda p: sum(jnp.sum(a * b) for a, b in zip(
      jax.tree.leaves(quantize.ste_fake_quant(p, "int8_full")), jax.tree.leaves(w)))))(params)
  assert all(bool(jnp.all(g == 3.0)) for g in jax.tree.leaves(grads))


def test_lora_starts_at_base_and_touches_only_dense_kernels(tiny):
  _, params = tiny
  adapters = quantize.lora_init(params, 8, jax.random.key(1))
  assert set(adapters) == {"/".join(p) for p in quantize.dense_kernel_paths(params)}
  for name, ab in adapters.items():
    assert ab["a"].shape[1] == ab["b"].shape[0] == min(8, *ab["a"].shape, ab["b"].shape[1])
  merged = quantize.lora_merge(params, adapters)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, merged))


def _synthetic(cfg, n, seed):
  """Random ids; label 1 iff token 7 occurs (half the sequences get one), so attention must find it."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(8, cfg.vocab_size, (n, cfg.max_len)).astype(np.int32)
  ids[:, 0] = CLS_ID
  labels = rng.randint(0, 2, n).astype(np.int32)
  ids[labels == 1, rng.randint(1, cfg.max_len, int(labels.sum()))] = 7
  return {"ids": jnp.asarray(ids), "labels": jnp.asarray(labels)}


def test_adapt_after_ptq_does_not_worsen_loss():
  cfg = configs.model_config(**TINY, dropout=0.0)
  model = models.build_model(cfg)

  def loss_fn(params, batch, rng):
    logits = model.apply({"params": params}, batch["ids"], train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

  train = [_synthetic(cfg, 64, s) for s in range(4)]
  evalb = _synthetic(cfg, 256, 99)
  ev = jax.jit(lambda p: loss_fn(p, evalb, jax.random.key(0)))
  # A briefly trained float model (STE with the fp32 policy is the identity: plain training).
  init = jax.jit(lambda k: models.init_params(cfg, k))(jax.random.key(0))
  params = quantize.adapt(init, loss_fn, train, steps=80, lr=3e-3,
                          method="ste", policy="fp32")
  ptq_loss = float(ev(quantize.fake_quant(params, "int8_full")))
  losses = []
  lora = quantize.adapt(params, loss_fn, train, steps=40, lr=3e-3, method="lora", policy="int8_full",
                        callback=lambda i, loss: losses.append(loss))
  assert len(losses) == 40 and np.isfinite(losses).all()
  stream = (train[i % len(train)] for i in range(40))  # an iterator works too (it is not restarted)
  ste = quantize.adapt(params, loss_fn, stream, steps=40, lr=1e-3, method="ste", policy="int8_full")
  lora_loss, ste_loss = float(ev(lora)), float(ev(ste))
  assert lora_loss <= ptq_loss + 1e-6 and ste_loss <= ptq_loss + 1e-6, (ptq_loss, lora_loss, ste_loss)
  # STE returns the stored model itself: exporting it changes nothing.
  again = quantize.fake_quant(ste, "int8_full")
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ste, again))


def test_adapt_rejects_unknown_method(tiny):
  _, params = tiny
  with pytest.raises(ValueError, match="method"):
    quantize.adapt(params, lambda p, b, r: 0.0, [None], steps=1, method="qlora")
