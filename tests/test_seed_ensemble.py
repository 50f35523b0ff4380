"""benchmarks/seed_ensemble.py: it averages the members' probabilities (not their logits, not their votes),
and prices k members as k sets of weights sharing one activation arena."""

import numpy as np
import pytest

from benchmark_scripts import load
from embbert_jax import configs, memory, predict

# Sample 1 (label neg): the probability mean says neg, the logit mean says pos. Sample 2 (label pos): the
# probability mean says pos, a majority vote says neg. Every member alone gets one of the two right.
LOGITS = {"a": [[0.0, 10.0], [0.0, 10.0]], "b": [[3.0, 0.0], [0.1, 0.0]], "c": [[3.0, 0.0], [0.1, 0.0]]}


class FakePredictor:
  def __init__(self, path):
    self.path, self.labels, self.cfg = str(path), ["neg", "pos"], None

  def logits(self, texts):
    assert len(texts) == 2
    return np.asarray(LOGITS[self.path], np.float32)


def test_members_probabilities_are_averaged(monkeypatch):
  bench = load("seed_ensemble")
  monkeypatch.setattr(predict, "Predictor", FakePredictor)
  accs, ens, _ = bench.split_scores(["a", "b", "c"], ["x", "y"], np.array([0, 1]))  # neg, pos
  assert accs == [0.5, 0.5, 0.5] and ens == 1.0


def test_each_extra_member_adds_one_set_of_weights():
  bench = load("seed_ensemble")
  cfg = configs.ModelConfig.from_dict(configs.model_config(**configs.PRESETS["nano"], num_labels=3))
  one, two = bench.ensemble_bytes(cfg, 1), bench.ensemble_bytes(cfg, 2)
  assert one[0] == two[0] == memory.total_bytes(cfg)
  assert two[1] - one[1] == 4 * memory.num_params(cfg)  # fp32 weights
  assert one[1] == memory.total_bytes(cfg) + 4 * cfg.num_labels
