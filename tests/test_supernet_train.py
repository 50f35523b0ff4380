"""Supernet pre-training end to end on a tiny corpus and space: it learns, resumes exactly, refuses a changed
recipe, and every child inherits its slice."""

import json

import jax
import numpy as np
import pytest

from embbert_jax import memory, supernet_train

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()

SPACE = '''
import ml_collections

def get_config():
  space = ml_collections.ConfigDict()
  space.families = ml_collections.ConfigDict()
  space.families.embbert = dict(preset="nano", grid=dict(vocab_size=(96,), max_len=(16, 32), hidden=(16,),
                                embed_dim=(4, 8), conv_expansion=(1.0, 2.0), conv_kernel=(2, 4),
                                num_layers=(1, 2)))
  space.train = ml_collections.ConfigDict()
  return space
'''


@pytest.fixture
def setup(tmp_path):
  rng = np.random.RandomState(0)
  docs = ["\n".join(" ".join(rng.choice(WORDS, 6)) for _ in range(8)) for _ in range(30)]
  (tmp_path / "corpus.txt").write_text("\n\n".join(docs) + "\n")
  (tmp_path / "space.py").write_text(SPACE)
  return tmp_path


def _argv(root, workdir, steps=6, **kw):
  flags = dict(space=root / "space.py", budget="1MB", vocab=96, workdir=workdir, steps=steps, batch_size=8,
               seq_len=16, warmup=2, eval_every=2, log_every=2, eval_pairs=16, corpus=root / "corpus.txt",
               cache_dir=root / "cache", learning_rate=3e-3)
  flags.update(kw)
  return [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _run(argv):
  return supernet_train.run(supernet_train.get_parser().parse_args(argv), argv)


def test_pretrains_resumes_exactly_and_every_child_inherits(setup, monkeypatch):
  root = setup
  full = _run(_argv(root, root / "full"))
  assert full["steps"] == 6 and full["children"] == 32
  rows = [json.loads(l) for l in (root / "full" / "model" / ".." / "metrics.jsonl").read_text().splitlines()]
  losses = [r["validation/largest/mlm_loss"] for r in rows if "validation/largest/mlm_loss" in r]
  assert losses[-1] < losses[0]  # it learns
  assert {"command", "corpus_sha256", "seed", "steps", "wall_s", "final"} <= set(full)

  # A run killed after its step-4 checkpoint resumes to exactly the uninterrupted result.
  real_step = supernet_train.Trainer.step

  def dying_step(self, state, batch, step):
    if step == 4:
      raise KeyboardInterrupt
    return real_step(self, state, batch, step)
  monkeypatch.setattr(supernet_train.Trainer, "step", dying_step)
  with pytest.raises(KeyboardInterrupt):
    _run(_argv(root, root / "killed"))
  monkeypatch.setattr(supernet_train.Trainer, "step", real_step)
  resumed = _run(_argv(root, root / "killed"))
  assert resumed["steps"] == 6
  a, _, _ = supernet_train.load(root / "full" / "model")
  b, sup, manifest = supernet_train.load(root / "killed" / "model")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert manifest["final"] == full["final"]

  # Every child of the space inherits its own slice, with its own parameter count.
  children = supernet_train.space_children(str(root / "space.py"), memory.parse_budget("1MB"), 96)
  loaded = supernet_train.load(root / "full" / "model")
  for child in children:
    enc = supernet_train.inherit(root / "full" / "model", child, loaded)
    want = [s for s in memory.param_shapes(child) if s.path[0] == "encoder"]
    assert sorted(memory.pytree_specs({"encoder": enc}), key=str) == sorted(want, key=str)

  with pytest.raises(ValueError, match="learning_rate"):
    _run(_argv(root, root / "full", learning_rate=1e-2))
