"""benchmarks/init_eager.py: its two modes build the same initial params (up to the normal draws' rounding)."""

import jax
import numpy as np

from benchmark_scripts import load
from embbert_jax import configs


def test_op_by_op_init_is_the_jitted_programs_params():
  bench = load("init_eager")
  cfg = configs.ModelConfig.from_dict(configs.model_config(vocab_size=64, max_len=16, hidden=16, embed_dim=8,
                                                           conv_kernel=4, num_layers=2))
  jit, eager = bench.params(cfg, "jit"), bench.params(cfg, "eager")
  assert jax.tree.structure(jit) == jax.tree.structure(eager)
  for a, b in zip(jax.tree.leaves(jit), jax.tree.leaves(eager), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert len(bench.model_configs()) == len(bench.CONFIGS) == len(set(bench.CONFIGS))
