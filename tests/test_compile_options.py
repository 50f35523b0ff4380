"""benchmarks/compile_options.py: its per-tensor baseline must train exactly as the flat optimiser does, or
the README's compile and step ratios compare different work."""

import jax
import numpy as np

from benchmark_scripts import load
from embbert_jax import configs, recipes, train


def _bench():
  return load("compile_options")


def test_tree_baseline_and_flat_step_train_alike_and_flat_has_fewer_kernels():
  bench = _bench()
  cfg = recipes.apply(configs.apply_overrides(train.get_config("nano"), [
      "model.vocab_size=256", "model.max_len=16", "model.hidden=16", "model.num_layers=1"]), "scratch")
  cfg.total_steps = 20
  batch = bench.random_batch(cfg, 4, 16)
  out, fusions = {}, {}
  for layout in ("tree", "flat"):
    step, state = bench.build(cfg, layout, cfg.total_steps)
    compiled = step.lower(state, batch, jax.random.key(0)).compile()
    fusions[layout] = compiled.as_text().count(" fusion(")
    for i in range(3):
      state, aux = compiled(state, batch, jax.random.key(i))
    out[layout] = (jax.device_get(state["params"]), jax.device_get(aux))
  for a, b in zip(jax.tree.leaves(out["tree"][0]), jax.tree.leaves(out["flat"][0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("loss", "grad_norm", "update_norm"):
    np.testing.assert_allclose(out["tree"][1][key], out["flat"][1][key], rtol=1e-5)
  assert fusions["flat"] < fusions["tree"]


def test_variant_options_parse():
  bench = _bench()
  assert bench.compiler_options([]) == {}
  assert bench.compiler_options(["level=1", "xla_flag=on"]) == {"xla_backend_optimization_level": 1,
                                                                 "xla_flag": "on"}
  # XLA refuses the string "true" for a bool option ("'true' is not a valid bool value").
  assert bench.compiler_options(["xla_llvm_disable_expensive_passes=true", "x=False", "n=-2"]) == {
      "xla_llvm_disable_expensive_passes": True, "x": False, "n": -2}
