"""The supernet's slicing rules: exact child shapes, masked training == the extracted child, zero gradients
outside a child's slice, and the configs a supernet refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embbert_jax import configs, memory, models, space, supernet

SUP = dict(vocab_size=64, max_len=16, hidden=16, embed_dim=8, conv_expansion=2.0, conv_kernel=4, num_layers=3,
           dropout=0.0)
CHILD = dict(SUP, max_len=8, hidden=8, embed_dim=4, conv_expansion=1.0, conv_kernel=2, num_layers=2)


def _cfg(**kw):
  return configs.model_config(**kw)


@pytest.fixture(scope="module")
def sup_params():
  sup = _cfg(**SUP)
  return sup, jax.jit(lambda k: models.init_params(sup, k, task="pretrain"))(jax.random.key(0))


def _ids(length=8):
  ids = np.random.RandomState(0).randint(5, SUP["vocab_size"], (3, length)).astype(np.int32)
  ids[:, 0] = configs.CLS_ID
  ids[1, 3] = configs.SEP_ID
  ids[2, 6:] = configs.PAD_ID
  return jnp.asarray(ids)


def test_supernet_config_takes_each_axis_maximum():
  cfgs = [_cfg(**CHILD), _cfg(**dict(CHILD, hidden=16, conv_kernel=4)), _cfg(**dict(CHILD, num_layers=3))]
  sup = supernet.supernet_config(cfgs)
  assert (sup.hidden, sup.conv_kernel, sup.num_layers, sup.embed_dim) == (16, 4, 3, 4)
  for c in cfgs:
    supernet.check_child(sup, c)


@pytest.mark.parametrize("change, field", [(dict(vocab_size=128), "vocab_size"),
                                           (dict(use_conv=False), "use_conv"),
                                           (dict(residual=True), "residual")])
def test_supernet_refuses_configs_that_share_no_tensors(change, field):
  with pytest.raises(supernet.SupernetError, match=field):
    supernet.supernet_config([_cfg(**CHILD), _cfg(**dict(CHILD, **change))])


def test_supernet_refuses_other_architectures_and_children_too_big():
  with pytest.raises(supernet.SupernetError, match="arch"):
    supernet.supernet_config([configs.get_preset("bert")])
  with pytest.raises(supernet.SupernetError, match="hidden=32 exceeds"):
    supernet.check_child(_cfg(**SUP), _cfg(**dict(CHILD, hidden=32)))


def test_extracted_child_equals_an_initialised_model_in_structure(sup_params):
  sup, params = sup_params
  child = _cfg(**CHILD)
  pre = supernet.extract(params, sup, child, "pretrain")
  # A classifier child inherits the encoder; its head is new (the supernet's heads are MLM and NSP).
  head = jax.eval_shape(lambda: models.init_params(child, jax.random.key(1)))["head"]
  cls = {"encoder": pre["encoder"], "head": head}
  for task, got in (("pretrain", pre), ("classify", cls)):
    want = jax.eval_shape(lambda: models.init_params(child, jax.random.key(0), task=task))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert [x.shape for x in jax.tree.leaves(got)] == [x.shape for x in jax.tree.leaves(want)]


def test_every_fitting_config_of_the_default_space_slices_to_its_own_shapes():
  cands = space.enumerate_space(space.load("default"), num_labels=2)
  fitting = space.fits(cands, "fp32", memory.parse_budget("2MB"))
  by_vocab: dict[int, list] = {}
  for c in fitting:
    by_vocab.setdefault(c.model.vocab_size, []).append(c.model)
  checked = 0
  for vocab, cfgs in by_vocab.items():
    sup = supernet.supernet_config(cfgs)
    # Abstract supernet tensors: slicing numpy zeros of the right shapes is all extract needs.
    params: dict = {}
    for spec in memory.param_shapes(sup, "pretrain"):
      supernet._put(params, spec.path, np.zeros(spec.shape, np.float32))
    for cfg in cfgs:
      child = supernet.extract(params, sup, cfg, "pretrain")
      got = memory.pytree_specs(child)
      assert sorted(got, key=str) == sorted(memory.param_shapes(cfg, "pretrain"), key=str)
      assert sum(s.size for s in got) == memory.num_params(cfg, "pretrain")
      checked += 1
  assert checked == len(fitting) > 100


def test_masked_training_config_computes_exactly_the_extracted_child(sup_params):
  sup, params = sup_params
  child = _cfg(**CHILD)
  ids = _ids()
  apply = lambda cfg: jax.jit(lambda p, x: models.build_model(cfg, "pretrain").apply({"params": p}, x))
  mlm_c, nsp_c = apply(child)(supernet.extract(params, sup, child, "pretrain"), ids)
  tc = supernet.train_config(sup, child.hidden, child.num_layers)
  masked = supernet.train_params(params, sup, child.hidden, child.num_layers, supernet.masks(sup, child))
  mlm_t, nsp_t = apply(tc)(masked, ids)
  np.testing.assert_allclose(mlm_t, mlm_c, atol=2e-5)
  np.testing.assert_allclose(nsp_t, nsp_c, atol=2e-5)
  # The (d, e) channel pairing matters: a flat cut of the conv's inner axis gives another model.
  wrong = jax.tree.map(lambda x: x, supernet.extract(params, sup, child, "pretrain"))
  conv = params["encoder"]["layer_0"]["conv_branch"]["conv"]
  wrong["encoder"]["layer_0"]["conv_branch"]["conv"] = {"kernel": conv["kernel"][-2:, :, :8],
                                                         "bias": conv["bias"][:8]}
  mlm_w, _ = apply(child)(wrong, ids)
  assert np.max(np.abs(np.asarray(mlm_w) - np.asarray(mlm_c))) > 1e-3


def test_a_child_keeps_the_taps_nearest_the_current_position(sup_params):
  sup, params = sup_params
  child = _cfg(**CHILD)
  kernel = supernet.extract(params, sup, child, "pretrain")["encoder"]["layer_0"]["conv_branch"]["conv"]["kernel"]
  full = params["encoder"]["layer_0"]["conv_branch"]["conv"]["kernel"]
  # Channel c of the child is channel c * e_max of the supernet; its taps are the supernet's last two.
  np.testing.assert_array_equal(kernel[:, 0, 3], full[2:, 0, 3 * 2])


def test_gradients_are_zero_outside_the_childs_slice(sup_params):
  sup, params = sup_params
  child = _cfg(**CHILD)
  tc = supernet.train_config(sup, child.hidden, child.num_layers)
  model, m = models.build_model(tc, "pretrain"), supernet.masks(sup, child)

  def loss(p):
    mlm, nsp = model.apply({"params": supernet.train_params(p, sup, child.hidden, child.num_layers, m)}, _ids())
    return jnp.sum(mlm ** 2) + jnp.sum(nsp ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  enc = grads["encoder"]
  assert not np.any(enc["layer_2"]["norm"]["scale"])  # layer 3 is not in a 2-layer child
  assert not np.any(enc["layer_0"]["attention"]["q"]["kernel"][8:])  # channels beyond d
  assert not np.any(enc["embedder"]["token"]["embedding"][:, 4:])  # columns beyond r
  conv = np.asarray(enc["layer_0"]["conv_branch"]["conv"]["kernel"]).reshape(4, 16, 2)
  assert not np.any(conv[:2]) and not np.any(conv[:, :, 1])  # leading taps, second multiplier
  assert np.any(conv[2:, :8, 0])  # and the child's own slice does learn
  assert np.any(enc["embedder"]["token"]["embedding"][:, :4])


def test_sandwich_draws_largest_smallest_and_one_per_band():
  cands = [_cfg(**dict(CHILD, hidden=h, num_layers=n)) for h in (4, 8, 16) for n in (1, 2, 3)]
  sup = supernet.supernet_config(cands)
  picks = supernet.sandwich(cands, sup, np.random.default_rng(0), n_random=2)
  sizes = sorted(memory.total_bytes(c) for c in cands)
  assert picks[0] is sup and memory.total_bytes(picks[1]) == sizes[0]
  mid = np.exp((np.log(sizes[0]) + np.log(sizes[-1])) / 2)
  assert memory.total_bytes(picks[2]) < mid <= memory.total_bytes(picks[3])
  again = supernet.sandwich(cands, sup, np.random.default_rng(0), n_random=2)
  assert [supernet.shape_key(c) for c in again] == [supernet.shape_key(c) for c in picks]
