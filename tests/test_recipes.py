"""Training recipes: schedule shapes, the scheduled optimiser is AdamW at peak x shape, the spec recipe is
unchanged, grouped members under a schedule match lone runs, and the CLI picks the recipe."""

import argparse
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from embbert_jax import losses, programs, recipes, train
from test_train import tiny_config


def sched(**kw):
  s = recipes.schedule_config()
  s.update(kw)
  return s


def test_schedule_shapes_warm_up_then_decay():
  cos = recipes.schedule_shape(sched(kind="cosine", warmup_fraction=0.1), 100)
  assert [float(cos(s)) for s in (0, 5, 10)] == pytest.approx([0.0, 0.5, 1.0])
  assert float(cos(55)) == pytest.approx(0.5) and float(cos(100)) == pytest.approx(0.0, abs=1e-7)
  lin = recipes.schedule_shape(sched(kind="linear", warmup_steps=20, warmup_fraction=0.5, end_fraction=0.1), 100)
  assert float(lin(20)) == pytest.approx(1.0) and float(lin(100)) == pytest.approx(0.1)  # steps beat fraction
  assert float(lin(60)) == pytest.approx(0.55)
  flat = recipes.schedule_shape(sched(kind="constant", warmup_steps=4), 100)
  assert float(flat(2)) == pytest.approx(0.5) and float(flat(80)) == 1.0
  with pytest.raises(ValueError, match="unknown schedule kind"):
    recipes.schedule_shape(sched(kind="step"), 10)


def _opt_cfg(**schedule):
  return ml_collections.ConfigDict(dict(grad_clip=1.0, b1=0.9, b2=0.999, eps=1e-8, schedule=sched(**schedule),
                                        total_steps=12))


def test_scheduled_optimizer_is_adamw_at_peak_times_shape():
  cfg = _opt_cfg(kind="cosine", warmup_fraction=0.25)
  shape = recipes.schedule_shape(cfg.schedule, 12)
  ours = losses.make_optimizer(cfg, 3e-3, 0.1)
  ref = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(lambda c: 3e-3 * shape(c), b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1))
  p = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
  pa, pb, sa, sb = p, p, ours.init(p), ref.init(p)
  for i in range(12):
    g = jax.tree.map(lambda x: jnp.sin(x * (i + 1)), pa)
    ua, sa = ours.update(g, sa, pa)
    ub, sb = ref.update(g, sb, pb)
    pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(pa["w"] - p["w"]).max()) > 1e-3  # it did move


def test_spec_recipe_keeps_the_constant_optimizer():
  cfg = train.get_config("nano")
  assert cfg.recipe == "spec" and recipes.is_constant(cfg.schedule) and cfg.learning_rate == 5e-5
  state = losses.make_optimizer(cfg).init({"w": jnp.zeros(3), "b": {"v": jnp.zeros((2, 2))}})
  assert len(state) == 2  # clip + AdamW, no schedule counter
  adam = state[1].inner_state[0]  # the moments: one flat vector of all 7 parameters (optax.flatten)
  assert adam.mu.shape == adam.nu.shape == (7,)
  scratch = recipes.apply(train.get_config("nano"), "scratch")
  flat, token = losses.make_optimizer(scratch, total_steps=10).init({"w": jnp.zeros(3)})
  assert len(flat) == 3  # clip + AdamW + the schedule's counter; then the token table's 10x (token)
  assert scratch.recipe == "scratch" and not recipes.is_constant(scratch.schedule) and scratch.token_lr_scale == 10
  assert "token table lr x10" in recipes.describe(scratch) and "token table" not in recipes.describe(cfg)
  # the spec recipe sets the table's rate back: a switch of recipe leaves nothing of the other behind
  assert recipes.apply(scratch, "spec").token_lr_scale == 1.0


def test_grouped_members_under_a_schedule_match_lone_runs(tmp_path):
  base = tiny_config(tmp_path, steps=12, eval_every=6, group_impl="map", label_smoothing=0.1)
  base.schedule.update(kind="cosine", warmup_fraction=0.25)
  cfgs = []
  for v in (dict(seed=0), dict(seed=1, learning_rate=1e-2, weight_decay=0.0)):
    c = base.copy_and_resolve_references()
    c.update(v)
    cfgs.append(c)
  grouped = train.train_group(cfgs, [tmp_path / f"g{i}" for i in range(2)])
  for i, c in enumerate(cfgs):
    solo = train.train_and_evaluate(c, tmp_path / f"solo{i}")
    assert grouped[i]["best_step"] == solo["best_step"] and solo["recipe"] == "spec"
    for k, v in solo["validation"].items():
      assert grouped[i]["validation"][k] == pytest.approx(v, abs=1e-5), (i, k)
  # The schedule and the run's length reach the program's key (a constant schedule keeps the old key).
  flat = base.copy_and_resolve_references()
  flat.schedule = recipes.schedule_config()
  progs = lambda c, n: programs.programs_for(c, "classify", False, n)
  assert progs(base, 12) is not progs(flat, 12) and progs(base, 12) is not progs(base, 24)
  assert progs(flat, 12) is progs(flat, 24)


def _args(argv):
  ap = argparse.ArgumentParser()
  train.add_common_flags(ap)
  ap.add_argument("--pretrain-steps", type=int, default=None)
  ap.add_argument("--init-from", default=None)
  ap.add_argument("--recipe", default="auto")
  return ap.parse_known_args(argv)


@pytest.mark.parametrize("argv,recipe,lr", [
    ([], "scratch", recipes.RECIPES["scratch"]["learning_rate"]),
    (["--init-from", "runs/pre"], "spec", 5e-5),
    (["--pretrain-steps", "10"], "spec", 5e-5),
    (["--set", "pretrain.steps=10"], "spec", 5e-5),
    (["--recipe", "spec"], "spec", 5e-5),
    (["--recipe", "scratch", "--set", "learning_rate=2e-3"], "scratch", 2e-3),  # --set wins over the recipe
])
def test_cli_picks_the_recipe(argv, recipe, lr):
  cfg = train.config_from_args(*_args(argv))
  assert cfg.recipe == recipe and cfg.learning_rate == lr
  assert recipes.describe(cfg).startswith(f"recipe {recipe}: ")


def test_train_cli_prints_recipe_and_writes_baselines(tmp_path, capsys):
  pytest.importorskip("sklearn", reason="scikit-learn (the baselines extra) is not installed")
  cfg = tiny_config(tmp_path)
  model = [f"--set=model.{k}={v}" for k, v in
           dict(vocab_size=96, max_len=32, hidden=16, embed_dim=8, conv_kernel=4, num_layers=1).items()]
  train.main(["--task", cfg.task, "--steps", "6", "--wandb", "disabled", "--workdir", str(tmp_path / "w"),
              f"--set=corpus={cfg.corpus}", f"--set=cache_dir={cfg.cache_dir}", "--set=batch_size=16", *model])
  out = capsys.readouterr().out
  assert out.startswith("init: embeddings: the token table from the corpus's token vectors")  # no encoder cached
  assert out.splitlines()[1].startswith("recipe scratch: AdamW lr ")  # token vectors: the from-scratch recipe
  assert "reference on the same split (test), TF-IDF (1-2 grams) + logistic regression: accuracy 1.0000" in out
  result = json.loads((tmp_path / "w" / "finetune" / "result.json").read_text())
  assert result["recipe"] == "scratch" and result["steps"] == 6 and result["init"]["kind"] == "embeddings"
  assert result["baselines"]["baselines"]["majority class"]["test"]["mcc"] == 0.0


def test_step_logs_the_norms_of_every_tensor_of_the_gradient_and_update():
  """The norms come from one flat vector (losses.flat_vector, shared with optax.flatten's concatenation in the
  program): they must still count every tensor, as a per-tensor norm does."""
  cfg = _opt_cfg(kind="cosine", warmup_fraction=0.25)
  opt = losses.make_optimizer(cfg, 3e-3, 0.1)
  p = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": {"v": jnp.ones(3), "u": jnp.full((2, 2), 0.5)}}
  loss = lambda params, batch, rng: (sum(jnp.sum(jnp.sin(x) * batch) for x in jax.tree.leaves(params)), {})
  state = {"step": 0, "params": p, "opt_state": opt.init(p)}
  new, aux = jax.jit(programs.make_train_step(loss, opt))(state, jnp.float32(2.0), None)
  grads = jax.grad(lambda params: loss(params, 2.0, None)[0])(p)
  updates = jax.tree.map(lambda a, b: a - b, new["params"], p)
  np.testing.assert_allclose(aux["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
  np.testing.assert_allclose(aux["update_norm"], optax.tree.norm(updates), rtol=1e-5)
  assert float(aux["grad_norm"]) > float(optax.tree.norm(grads["b"])) > 0  # every tensor counted
