"""benchmarks/attention_matmuls.py: the variants it times compute the attention products they are named for."""

import numpy as np

from benchmark_scripts import load


def test_every_variant_computes_its_product():
  bench = load("attention_matmuls")
  b, l, d = 2, 8, 4
  variants = bench.variants(b, l, d)
  out = {name: np.asarray(f(*xs)) for name, f, xs, _ in variants}
  (_, _, (q, u), useful), (_, _, (w, _), _) = variants[:2]
  q, u, w = map(np.asarray, (q, u, w))
  assert useful == 2 * b * l * l * d
  scores = q @ u.transpose(0, 2, 1)
  for name in ("scores  bqd,bkd->bqk", "scores, d leading  bdq,bkd->bqk", "scores as lax.map over b"):
    np.testing.assert_allclose(out[name], scores, rtol=1e-5, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(out["values  bqk,bkd->bqd"], w @ u, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["grad u  bqk,bqd->bkd"], w.transpose(0, 2, 1) @ q, rtol=1e-5, atol=1e-5)
  flat = out["one flat GEMM (bl,d)(d,bl)"]
  assert flat.shape == (b * l, b * l)
  for i in range(b):  # its diagonal blocks are each example's scores; the rest is the wasted work
    np.testing.assert_allclose(flat[i * l:(i + 1) * l, i * l:(i + 1) * l], scores[i], rtol=1e-5, atol=1e-5)
