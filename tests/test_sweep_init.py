"""`sweep --init`: every trial starts from the slice of a supernet (or a standalone pre-training) and
fine-tunes with the fine-tuning recipe; trials.csv and the frontier say which init; a study cannot resume
with another; a bad DIR, a config outside the supernet, or a trainer that cannot load an encoder fail in one
line before the ledger exists. Fast: the fake trainer of test_sweep (extended with init_from where a test
needs it) and a tiny synthetic supernet of the `tiny` space."""

import csv
import json

import jax
import pytest

from embbert_jax import artifacts, engine, models, supernet, sweep, train
from embbert_jax import space as space_lib
from test_sweep import FAKE_TRAINER, _cli, _settings
from test_train import write_fixture

# The fake trainer with the fields inits.resolve reads; each trained member's init_from is logged.
WITH_INIT = FAKE_TRAINER + '''
_plain_config, _plain_group, _plain_one = get_config, train_group, train_and_evaluate


def get_config(preset="embbert"):
  c = _plain_config(preset)
  c.init_from, c.corpus, c.cache_dir = "", "", os.environ.get("FAKE_CACHE", "")
  return c


def train_group(cfgs, workdirs, report=None):
  with open(os.environ["FAKE_INIT_LOG"], "a") as f:
    f.write("".join(json.dumps(c.init_from) + "\\n" for c in cfgs))
  return _plain_group(cfgs, workdirs, report)


def train_and_evaluate(cfg, workdir, report=None):
  with open(os.environ["FAKE_INIT_LOG"], "a") as f:
    f.write(json.dumps(cfg.init_from) + "\\n")
  return _plain_one(cfg, workdir, report)
'''


def _tiny_models(**only):
  cands = space_lib.enumerate_space(space_lib.load("tiny"), 2)
  return [c.model for c in cands if all(getattr(c.model, k) == v for k, v in only.items())]


def _supernet(folder, steps=5, **only):
  """A saved supernet (no tokenizer file: any tokenizer matches) holding the tiny space's configs."""
  sup = supernet.supernet_config(_tiny_models(**only))
  params = jax.device_get(models.init_params(sup, jax.random.key(0), task="pretrain"))
  artifacts.save_model(folder, params, sup)
  (folder / "manifest.json").write_text(json.dumps({"supernet": sup.to_dict(), "vocab_size": sup.vocab_size,
                                                    "space": "tiny", "steps": steps}))
  return folder


@pytest.fixture
def fake_init(tmp_path, monkeypatch):
  path = tmp_path / "fake_init_trainer.py"
  path.write_text(WITH_INIT)
  monkeypatch.setenv("FAKE_INIT_LOG", str(tmp_path / "init.log"))
  monkeypatch.setenv("FAKE_CACHE", str(tmp_path / "cache"))
  return path


def _rows(out):
  return list(csv.DictReader((out / "trials.csv").open()))


def test_trials_inherit_the_cached_supernet_record_it_and_cannot_resume_with_another_init(tmp_path, fake_init):
  folder = _supernet(tmp_path / "cache" / "supernets" / "tiny-v512" / "model").resolve()
  out = sweep.run_sweep(_settings(tmp_path, fake_init, study="i1", max_trials=3), log=lambda m: None)
  assert out["ran"] == 3
  assert [json.loads(l) for l in (tmp_path / "init.log").read_text().splitlines()] == [str(folder)] * 3
  rows = _rows(tmp_path / "out")
  assert [(r["init"], r["init_from"], r["init_steps"]) for r in rows] == [("supernet", str(folder), "5")] * 3
  assert f"encoder: supernet {folder} (5 pre-training steps)" in (tmp_path / "out" / "frontier.md").read_text()
  with pytest.raises(engine.SweepError, match="was started with init=") as e:
    sweep.run_sweep(_settings(tmp_path, fake_init, study="i1", max_trials=4, init="scratch"), log=lambda m: None)
  assert "\n" not in str(e.value)
  # The same settings resume it.
  assert sweep.run_sweep(_settings(tmp_path, fake_init, study="i1", max_trials=4), log=lambda m: None)["ran"] == 1


def test_auto_is_scratch_when_no_supernet_holds_every_config(tmp_path, fake_init, capsys):
  _supernet(tmp_path / "cache" / "supernets" / "narrow" / "model", hidden=16)  # holds half the space
  out = sweep.run_sweep(_settings(tmp_path, fake_init, study="i2", max_trials=2), log=lambda m: None)
  assert out["ran"] == 2 and {r["init"] for r in _rows(tmp_path / "out")} == {"scratch"}
  assert set((tmp_path / "init.log").read_text().split()) == {'""'}
  # Asked for, a supernet that lacks some fitting config is a one-line error before the ledger exists.
  narrow = tmp_path / "cache" / "supernets" / "narrow"
  for init, expected in ((str(narrow), "is not a sub-network of the supernet in"),
                         ("supernet", "no shipped or cached supernet")):
    rc = sweep.main(_cli(tmp_path, fake_init, "--init", init, study="i3", out="o3"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and expected in err and err.count("\n") == 0, err
    if init != "supernet":
      assert "hidden=32 exceeds the supernet's 16 (and 3 more of the 8 configs)" in err, err
  assert not (tmp_path / "o3" / "ledger.db").exists()


def test_a_missing_init_folder_fails_in_one_line(tmp_path, fake_init, capsys):
  rc = sweep.main(_cli(tmp_path, fake_init, "--init", str(tmp_path / "nowhere"), out="o"))
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("error: --init ") and "no such folder" in err and err.count("\n") == 0, err
  assert not (tmp_path / "o" / "ledger.db").exists()


def test_a_trainer_without_init_from_trains_from_scratch_only(tmp_path, capsys):
  fake = tmp_path / "fake_trainer.py"
  fake.write_text(FAKE_TRAINER)
  _supernet(tmp_path / "sup" / "model")
  rc = sweep.main(_cli(tmp_path, fake, "--init", str(tmp_path / "sup"), out="o"))
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "has no init_from field); use --init scratch" in err and err.count("\n") == 0, err
  assert not (tmp_path / "o" / "ledger.db").exists()
  out = sweep.run_sweep(_settings(tmp_path, fake, study="i4", max_trials=2), log=lambda m: None)  # auto
  assert out["ran"] == 2 and {r["init"] for r in _rows(tmp_path / "out")} == {"scratch"}
  assert "encoder: scratch" in (tmp_path / "out" / "frontier.md").read_text()


def test_a_pretrained_init_picks_the_fine_tuning_recipe(tmp_path):
  """With the real trainer: init_from is the supernet and recipe auto gives 'spec' (scratch: 'scratch')."""
  folder = _supernet(tmp_path / "sup" / "model").resolve()
  _, task = write_fixture(tmp_path)
  for init, want_from, want_recipe in ((str(folder.parent), str(folder), "spec"), ("scratch", "", "scratch")):
    s = _settings(tmp_path, "unused", study=f"r-{want_recipe}", task=str(task), init=init,
                  trainer="embbert_jax.train")
    sw = engine.prepare(s, trainer=train, log=lambda m: None)
    assert sw.init["path"] == want_from and sw.identity.get("init", {}).get("path", "") == want_from
    for c in sw.ordered:
      cfg = engine.trainer_config(sw, c.model, 0, c.hash)
      assert (cfg.init_from, cfg.recipe) == (want_from, want_recipe)


def test_auto_gives_the_real_trainer_token_vectors_and_a_study_keeps_them(tmp_path):
  """With the real trainer and nothing pre-trained, auto is token vectors: token_vectors on, recipe
  scratch, and the study's identity records the init (a scratch study then cannot resume it)."""
  _, task = write_fixture(tmp_path)
  for init, want in (("auto", True), ("embeddings", True), ("scratch", False)):
    s = _settings(tmp_path, "unused", study=f"v-{init}", task=str(task), init=init, trainer="embbert_jax.train")
    sw = engine.prepare(s, trainer=train, log=lambda m: None)
    assert sw.init["kind"] == ("embeddings" if want else "scratch")
    assert ("init" in sw.identity) == want
    for c in sw.ordered:
      cfg = engine.trainer_config(sw, c.model, 0, c.hash)
      assert (cfg.token_vectors, cfg.init_from, cfg.recipe) == (want, "", "scratch")
