"""Bad input, as a new user types it: every case is refused in one line naming what is wrong, with exit code 2,
before anything trains (nothing here trains or compiles a model)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from embbert_jax import configs, data, describe, pretrain, train


def write_task(path: Path, n: int = 40) -> Path:
  path.write_text("".join(json.dumps({"text": f"word{i} {'good' if i % 2 else 'bad'}", "label": i % 2}) + "\n"
                          for i in range(n)))
  return path


def exit_of(main, argv, capsys) -> tuple[int, str]:
  """(exit code, stderr) of a CLI's main(argv) that must stop before training."""
  with pytest.raises(SystemExit) as stop:
    main(argv)
  code = stop.value.code
  return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [
    (["--seeds", "0"], "--seeds: must be >= 1"),
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--steps", "-5"], "--steps: must be >= 1"),
    (["--steps", "ten"], "--steps: expected an integer"),
    (["--set", "epochs=0"], "epochs must be >= 1 when steps is 0"),
    (["--set", "steps=-5"], "steps must be >= 0"),
    (["--set", "batch_size=0"], "batch_size must be >= 1"),
    (["--set", "batch_size=-4"], "batch_size must be >= 1"),
    (["--set", "eval_every=-1"], "eval_every must be >= 0"),
    (["--set", "learning_rate=-1"], "learning_rate must be > 0"),
    (["--set", "learning_rate=0"], "learning_rate must be > 0"),
    (["--set", "learning_rate=1e999"], "learning_rate must be a finite number, not inf"),
    (["--set", "learning_rate=nan"], "learning_rate must be a finite number, not nan"),
    (["--set", "learning_rate=fast"], "'learning_rate': expected a number"),
    (["--set", "pretrain.mask_rate=1.5"], "pretrain.mask_rate must be in (0.0, 1.0]"),
    (["--set", "group_impl=pmap"], "group_impl must be one of auto, vmap, map"),
    (["--set", "model.dtype=float13"], "use one of float32, bfloat16, float16"),
    (["--set", "learnin_rate=1e-3"], "did you mean 'learning_rate'?"),
    (["--set", "modle.hidden=8"], "did you mean 'model'?"),
    (["--preset", "embbrt"], "did you mean 'embbert'?"),
    (["--task", "rt_polarty"], "did you mean 'rt_polarity'?"),
])
def test_train_refuses_bad_settings_in_one_line_with_exit_2(tmp_path, capsys, argv, expected, monkeypatch):
  def no_training(*a, **k):
    raise AssertionError("bad input reached training")
  monkeypatch.setattr(train, "run_seeds", no_training)
  task = write_task(tmp_path / "t.jsonl")
  has_task = "--task" in argv
  code, err = exit_of(train.main, [*(() if has_task else ("--task", str(task))), "--wandb", "disabled",
                                   "--workdir", str(tmp_path / "run"), *argv], capsys)
  assert code == 2 and expected in err, err
  if "usage:" not in err:  # argparse's own errors print its usage first
    assert len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,expected", [
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--steps", "5", "--set", "pretrain.batch_size=0"], "pretrain.batch_size must be >= 1"),
    (["--steps", "5", "--set", "pretrain.learning_rate=-1"], "pretrain.learning_rate must be > 0"),
    (["--steps", "5", "--set", "model.param_dtype=int3"], "use one of float32"),
])
def test_pretrain_refuses_bad_settings(tmp_path, capsys, argv, expected, monkeypatch):
  monkeypatch.setattr(train, "pretrain", lambda *a, **k: pytest.fail("bad input reached pre-training"))
  code, err = exit_of(pretrain.main, ["--wandb", "disabled", "--workdir", str(tmp_path / "run"), *argv], capsys)
  assert code == 2 and expected in err, err


@pytest.mark.parametrize("setting", ["model.dtype=float13", "dtype=float13", "param_dtype=float8"])
def test_describe_refuses_an_unknown_dtype(capsys, setting):
  code, err = exit_of(describe.main, ["--preset", "nano", "--set", setting], capsys)
  assert code == 2 and "float32, bfloat16, float16" in err and len(err.strip().splitlines()) == 1


def test_validate_training_accepts_the_recipes_and_skips_missing_fields():
  configs.validate_training(train.get_config("nano"))
  import ml_collections
  configs.validate_training(ml_collections.ConfigDict(dict(batch_size=4)))  # a trainer with fewer fields
  with pytest.raises(configs.ConfigError, match="batch_size"):
    configs.validate_training(ml_collections.ConfigDict(dict(batch_size=0)))


def test_unknown_task_did_you_mean():
  with pytest.raises(data.DataError, match="did you mean 'sms_spam'"):
    data.load_task("sms-spam")


# ------------------------------------------------------------------------------------------- the sweep

# The trainer config of both fake trainers below (fields the sweep sets on every trial).
_GET_CONFIG = '''
def get_config():
  c = ml_collections.ConfigDict()
  c.model, c.task, c.seed, c.batch_size, c.learning_rate = ml_collections.ConfigDict(), "t", 0, 32, 5e-5
  c.steps, c.eval_every, c.log_every = 0, 0, 50
  c.pretrain = ml_collections.ConfigDict(dict(steps=0))
  c.stop_at, c.patience = 0, 0
  c.wandb = ml_collections.ConfigDict(dict(mode="auto", project="embbert_jax", group="", name=""))
  return c
'''

FAKE_TRAINER = '''
import ml_collections
NEEDS_DATA = False
''' + _GET_CONFIG + '''


def train_and_evaluate(cfg, workdir, report=None):
  raise AssertionError("bad input reached training")
'''
_SPACE = ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict(dict("
          "families=dict(a=dict(preset='nano', grid=dict(hidden=(8,)))), train=dict({train})))\n")


def sweep_error(tmp_path, capsys, *args, out="o") -> str:
  from embbert_jax import sweep
  fake = tmp_path / "fake_trainer.py"
  fake.write_text(FAKE_TRAINER)
  rc = sweep.main(["--budget", "2MB", "--space", "tiny", "--no-wandb", "--trainer", str(fake),
                   "--out", str(tmp_path / out), *args])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("error: ") and err.count("\n") == 0, (rc, err)
  return err


@pytest.mark.parametrize("budget,expected", [
    ("1e400MB", "above the largest accepted"), ("1e300MB", "above the largest accepted"),
    ("1e99999999MB", "above the largest accepted"), ("-2MB", "cannot read memory budget"),
    ("0MB", "at least one byte"), ("two megs", "cannot read memory budget")])
def test_sweep_budget_bounds(tmp_path, capsys, budget, expected):
  assert expected in sweep_error(tmp_path, capsys, f"--budget={budget}")
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("train_fields,expected", [
    ("batch_size=0", "batch_size must be >= 1"), ("learning_rate=float('inf')", "learning_rate must be a finite"),
    ("learning_rate=-1e-3", "learning_rate must be > 0"), ("eval_every=-1", "eval_every must be >= 0")])
def test_sweep_refuses_bad_training_fields_of_a_space(tmp_path, capsys, train_fields, expected):
  space = tmp_path / "space.py"
  space.write_text(_SPACE.format(train=train_fields))
  assert expected in sweep_error(tmp_path, capsys, "--space", str(space))
  assert not (tmp_path / "o").exists()


def test_sweep_storage_or_out_under_a_file(tmp_path, capsys):
  (tmp_path / "plain").write_text("x")
  err = sweep_error(tmp_path, capsys, "--storage", str(tmp_path / "plain" / "ledger.db"))
  assert f"{tmp_path / 'plain'} is a file, not a folder" in err
  err = sweep_error(tmp_path, capsys, out="plain")
  assert "results folder (--out)" in err and "is a file" in err
  err = sweep_error(tmp_path, capsys, "--storage", str(tmp_path))
  assert "SQLite ledger (--storage)" in err and "is a folder" in err


def test_sweep_read_only_ledger_is_one_line(tmp_path, capsys, monkeypatch):
  db = tmp_path / "ro" / "ledger.db"
  db.parent.mkdir()
  db.write_bytes(b"")
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != db and real_access(p, mode, **k))
  err = sweep_error(tmp_path, capsys, "--storage", str(db))
  assert f"SQLite ledger (--storage): {db} is read-only" in err


def test_sweep_ledger_errors_past_the_checks_are_one_line(tmp_path, monkeypatch):
  """A ledger that fails once open (a read-only database user, a full disk) gives LedgerError, one line."""
  import sqlalchemy as sa

  from embbert_jax import engine, ledger as ledger_lib
  fake = tmp_path / "fake_trainer.py"
  fake.write_text(FAKE_TRAINER)
  s = engine.get_config()
  s.update(dict(budget="2MB", space="tiny", wandb=False, out=str(tmp_path / "o"), trainer=str(fake),
                storage=f"sqlite:///{tmp_path / 'l.db'}"))
  sw = engine.prepare(s, log=lambda m: None)

  def read_only(*a, **k):
    raise sa.exc.OperationalError("INSERT INTO study_user_attributes ...", {},
                                  Exception("attempt to write a readonly database\n[SQL: INSERT ...]"))
  monkeypatch.setattr(ledger_lib.Ledger, "set_study_attr", read_only)
  with pytest.raises(ledger_lib.LedgerError) as err:
    engine.open_ledger(sw)
  assert str(err.value).endswith(": attempt to write a readonly database") and "\n" not in str(err.value)


def _others_can_reach(path: Path) -> bool:
  """Whether a user other than the owner can traverse every folder down to `path` (a checkout in a
  `mktemp -d` folder, mode 0700, cannot be imported by nobody)."""
  return all(os.stat(p).st_mode & 0o001 for p in [*Path(os.path.abspath(path)).parents])


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
@pytest.mark.skipif(not (_others_can_reach(Path(__file__).parent) and _others_can_reach(Path(sys.prefix) / "x")),
                    reason="the checkout or its virtual environment sits in a folder nobody may enter")
def test_sweep_read_only_ledger_as_another_user():
  """The real case: an existing ledger its user may not write (root writes anything, so: run as nobody)."""
  root = Path(tempfile.mkdtemp(prefix="embbert_ro_"))  # pytest's tmp_path is private to root
  try:
    os.chmod(root, 0o755)
    fake = root / "fake_trainer.py"
    fake.write_text(FAKE_TRAINER.replace("raise AssertionError(\"bad input reached training\")",
                                         "return {'validation': {'mcc': 0.1}, 'test': {'mcc': 0.1}}"))
    fake.chmod(0o644)
    base = ["--budget", "2MB", "--space", "tiny", "--no-wandb", "--trainer", str(fake), "--max-trials", "1",
            "--steps", "2", "--out", str(root / "o")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first = subprocess.run([sys.executable, "-m", "embbert_jax.sweep", *base], env=env, capture_output=True,
                           text=True, timeout=300)
    assert (root / "o" / "ledger.db").is_file(), first.stderr
    for p in [root / "o", *(root / "o").rglob("*")]:
      os.chmod(p, 0o755 if p.is_dir() else 0o644)
    again = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                            "embbert_jax.sweep", *base], env={**env, "HOME": "/tmp"}, capture_output=True,
                           text=True, timeout=300, cwd="/tmp")
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert again.stderr.strip().splitlines() == [f"error: the results folder (--out): {root / 'o'} "
                                                 "is read-only; make it writable or give another path"]
  finally:
    shutil.rmtree(root)


# ------------------------------------------------------------------------------------------- task files


def _rows(n=40):
  return [{"text": f"word{i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(n)]


def _jsonl(path: Path, rows) -> Path:
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def one_line_data_error(path, match):
  with pytest.raises(data.DataError) as err:
    data.load_task(path)
  message = str(err.value)
  assert "\n" not in message and str(path) in message and match in message, message
  return message


def test_jsonl_row_that_is_not_an_object(tmp_path):
  rows = _rows()
  rows[7] = '["a list", 1]'
  one_line_data_error(_jsonl(tmp_path / "t.jsonl", rows), "row 8 (line 8) is a JSON list, not an object")


def test_malformed_jsonl_names_the_row(tmp_path):
  rows = _rows(300)
  rows[200] = '{"text": "broken", "label": 1'
  path = _jsonl(tmp_path / "t.jsonl", rows)
  path.write_text("\n" + path.read_text())  # a blank first line: row 201 is line 202
  one_line_data_error(path, "row 201 (line 202) is not valid JSON")


def test_json_file_holding_a_list_of_rows_or_not(tmp_path):
  rows = _rows()
  (tmp_path / "ok.json").write_text(json.dumps(rows, indent=1))
  assert data.load_task(tmp_path / "ok.json").num_labels == 2
  (tmp_path / "bad.json").write_text(json.dumps([*rows[:5], "just text", *rows[5:]]))
  one_line_data_error(tmp_path / "bad.json", "row 6 is a JSON str, not an object")
  (tmp_path / "dict.json").write_text(json.dumps({"data": rows}))
  one_line_data_error(tmp_path / "dict.json", "holds one JSON object")


def _csv(path: Path, lines) -> Path:
  path.write_text("text,label\n" + "".join(f"{line}\n" for line in lines))
  return path


def test_csv_long_fields_are_read(tmp_path):
  big = "word " * 300_000  # 1.5 MB, past the csv module's default 128 kB field limit
  lines = [f"{'good' if i % 2 else 'bad'} {i},{i % 2}" for i in range(40)] + [f'"{big}",1']
  task = data.load_task(_csv(tmp_path / "t.csv", lines))
  assert max(len(t) for s in task.splits.values() for t in s.text) == len(big)


def test_csv_empty_label_cell_is_missing_not_a_class(tmp_path):
  lines = [f"w{i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
  lines[6] = "no rating here,"
  one_line_data_error(_csv(tmp_path / "t.csv", lines), "row 7 (line 8): the label field 'label' is empty")


def test_csv_row_with_extra_fields(tmp_path):
  lines = [f"w{i},{i % 2}" for i in range(40)]
  lines[4] = "great, really great,1"
  one_line_data_error(_csv(tmp_path / "t.csv", lines), "row 5 (line 6) has 3 fields, the header 2")


@pytest.mark.parametrize("value,match", [(None, "is missing (null)"), (["a", "b"], "is a list")])
def test_null_or_list_texts(tmp_path, value, match):
  rows = _rows()
  rows[3]["text"] = value
  one_line_data_error(_jsonl(tmp_path / "t.jsonl", rows), f"row 4 (line 4): the text field 'text' {match}")


def test_empty_texts_warn_and_all_empty_is_an_error(tmp_path, capsys):
  rows = _rows()
  rows[2]["text"] = rows[9]["text"] = "  "
  data.load_task(_jsonl(tmp_path / "some.jsonl", rows))
  err = capsys.readouterr().err
  assert "warning:" in err and "2 empty text(s)" in err and "row 3 (line 3), row 10 (line 10)" in err
  one_line_data_error(_jsonl(tmp_path / "all.jsonl", [{**r, "text": ""} for r in rows]), "every text")


@pytest.mark.parametrize("value,match", [([0, 1], "is a list"), (None, "is missing"), ({"y": 1}, "is a dict"),
                                         ("", "is empty"), (" ", "is empty")])
def test_bad_labels_name_the_row(tmp_path, value, match):
  rows = _rows()
  rows[11]["label"] = value
  one_line_data_error(_jsonl(tmp_path / "t.jsonl", rows), f"row 12 (line 12): the label field 'label' {match}")


def test_one_class_task(tmp_path):
  rows = [{**r, "label": "pos"} for r in _rows()]
  one_line_data_error(_jsonl(tmp_path / "t.jsonl", rows), "needs >= 2 classes in its training rows; found 1 (pos)")


def test_class_only_in_test_warns(tmp_path, capsys):
  rows = [{**r, "split": "train"} for r in _rows()]
  rows += [{"text": "odd one", "label": 7, "split": "test"}]
  task = data.load_task(_jsonl(tmp_path / "t.jsonl", rows))
  assert task.num_labels == 3
  assert "class(es) 7 occur in the test split but not in training" in capsys.readouterr().err


def test_train_cli_refuses_a_bad_task_file_before_training(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(train, "run_seeds", lambda *a, **k: pytest.fail("bad input reached training"))
  monkeypatch.setattr(train, "pretrain", lambda *a, **k: pytest.fail("bad input reached pre-training"))
  rows = [{**r, "label": 1} for r in _rows()]
  path = _jsonl(tmp_path / "one.jsonl", rows)
  code, err = exit_of(train.main, ["--task", str(path), "--pretrain-steps", "5", "--wandb", "disabled",
                                   "--workdir", str(tmp_path / "run")], capsys)
  assert code == 2 and "needs >= 2 classes" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- secrets

PASSWORD = "PL4NTED-s3cret"


@pytest.mark.parametrize("url,shown", [
    (f"postgresql+psycopg2://u:{PASSWORD}@host/db", "postgresql+psycopg2://u:***@host/db"),
    ("postgresql+psycopg2://u:p@ss:w@rd@host/db", "postgresql+psycopg2://u:***@host/db"),
    ("--storage=postgresql://u:a@b:c@h:5432/d?sslmode=require",
     "--storage=postgresql://u:***@h:5432/d?sslmode=require"),
    ("cannot open postgresql://u:x@y@h/db: timeout, see http://a.b/c",
     "cannot open postgresql://u:***@h/db: timeout, see http://a.b/c"),
    ("postgresql://:pw@host/db", "postgresql://:***@host/db"),
    ("sqlite:////tmp/a/ledger.db", "sqlite:////tmp/a/ledger.db"), ("postgresql://host/db", "postgresql://host/db")])
def test_redact_masks_passwords_with_at_and_colon(url, shown):
  from embbert_jax import ledger as ledger_lib
  assert ledger_lib.redact(url) == shown


SECRET_TRAINER = '''
import time
import ml_collections
from pathlib import Path
from embbert_jax import memory, runlog
NEEDS_DATA = False
''' + _GET_CONFIG + '''


def train_and_evaluate(cfg, workdir, report=None):
  Path(workdir).mkdir(parents=True, exist_ok=True)
  log = runlog.Logger(Path(workdir), cfg, 0)  # the real trainer's wandb run and metrics.jsonl
  log.log(cfg.steps, {"validation/mcc": 0.1})
  m = {"accuracy": 0.6, "mcc": 0.1, "macro_f1": 0.5}
  log.close({"validation": m})
  return {"validation": m, "test": m, "metric": "mcc", "best_step": cfg.steps, "steps": cfg.steps,
          "train_time_s": 0.1, "steps_per_s": 100.0, "tokens_per_s": 0.0,
          "num_params": memory.num_params(cfg.model)}
'''


def test_a_storage_password_reaches_no_written_file(tmp_path, capsys, monkeypatch):
  """A PostgreSQL URL with a planted password (served here by SQLite): the sweep's files, the trial's and the
  summary's wandb runs (wandb records sys.argv) and the log hold no trace of it."""
  from embbert_jax import ledger as ledger_lib
  from embbert_jax import sweep
  url = f"postgresql+psycopg2://user:{PASSWORD}@db.example:5432/sweeps"
  real_open = ledger_lib.open_storage
  monkeypatch.setattr(ledger_lib, "open_storage", lambda u, *a, **k: real_open(
      f"sqlite:///{tmp_path / 'ledger.db'}" if u == url else u, *a, **k))
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
  fake = tmp_path / "secret_trainer.py"
  fake.write_text(SECRET_TRAINER)
  argv = ["--budget", "2MB", "--space", "tiny", "--scheduler", "fixed", "--wandb", "--trainer", str(fake),
          "--max-trials", "1",
          "--steps", "2", "--storage", url, "--study", "s", "--out", str(tmp_path / "out")]
  monkeypatch.setattr(sys, "argv", ["embbert_jax.sweep", *argv])
  assert sweep.main(argv) == 0
  out, err = capsys.readouterr()
  assert "user:***@db.example" in err and PASSWORD not in out + err
  written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "ledger.db" and p != fake]
  assert any("wandb" in str(p) and "run-" in str(p) for p in written), written  # the runs were written
  leaks = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
  assert not leaks
  assert PASSWORD not in " ".join(sys.argv)


def test_storage_url_from_the_environment(tmp_path, capsys, monkeypatch):
  from embbert_jax import engine
  monkeypatch.setenv(engine.STORAGE_ENV, str(tmp_path / "env" / "ledger.db"))
  s = engine.get_config()
  fake = tmp_path / "fake_trainer.py"
  fake.write_text(FAKE_TRAINER)
  s.update(dict(budget="2MB", space="tiny", wandb=False, out=str(tmp_path / "o"), trainer=str(fake)))
  assert engine.prepare(s, log=lambda m: None).storage_url == f"sqlite:///{tmp_path / 'env' / 'ledger.db'}"


# ------------------------------------------------------------------------------------------- export


def test_export_out_that_cannot_be_a_folder(tmp_path, capsys):
  from embbert_jax import export
  (tmp_path / "plain.txt").write_text("x")
  cases = {tmp_path / "plain.txt": "is a file; give a folder path",
           tmp_path / "plain.txt" / "sub": "plain.txt is a file, not a folder"}
  for out, expected in cases.items():
    assert export.main([str(tmp_path / "no_checkpoint"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and expected in err and err.count("\n") == 1, err
  assert (tmp_path / "plain.txt").read_text() == "x"


# ------------------------------------------------------------------------------------------- field names


def test_text_and_label_fields_from_the_task_string(tmp_path):
  rows = [{"sentence": r["text"], "gold": ["neg", "pos"][r["label"]]} for r in _rows()]
  path = _jsonl(tmp_path / "t.jsonl", rows)
  message = one_line_data_error(path, "no field 'text'")
  assert "--text-field/--label-field" in message
  spec = data.task_with_fields(str(path), text="sentence", label="gold")
  assert spec == f"{path}:text=sentence,label=gold"
  assert data.task_with_fields(spec, label="gold") == spec  # idempotent
  task = data.load_task(spec)
  assert task.name == "t" and task.label_names == ("neg", "pos") and task.train.text[0].startswith("word")
  with pytest.raises(data.DataError, match="cannot be empty or hold"):
    data.task_with_fields(str(path), text="a,b")


def test_train_and_sweep_take_the_field_options(tmp_path, capsys, monkeypatch):
  rows = [{"sentence": r["text"], "gold": r["label"]} for r in _rows()]
  path = _jsonl(tmp_path / "t.jsonl", rows)
  seen = {}
  monkeypatch.setattr(train, "run_seeds", lambda cfg, workdir, seeds: seen.update(task=cfg.task) or
                      {"runs": [], "failed": [], "summary": {}})
  monkeypatch.setattr(train, "add_baselines", lambda *a: None)
  train.main(["--task", str(path), "--text-field", "sentence", "--label-field", "gold", "--wandb", "disabled",
              "--workdir", str(tmp_path / "run")])
  assert seen["task"] == f"{path}:text=sentence,label=gold"
  code, err = exit_of(train.main, ["--task", str(path), "--text-field", "sentense", "--label-field", "gold",
                                   "--wandb", "disabled", "--workdir", str(tmp_path / "run")], capsys)
  assert code == 2 and "has no field 'sentense'" in err

  from embbert_jax import engine
  fake = tmp_path / "fake_trainer.py"
  fake.write_text(FAKE_TRAINER.replace("NEEDS_DATA = False", "NEEDS_DATA = True"))
  s = engine.get_config()
  s.update(dict(budget="2MB", space="tiny", wandb=False, out=str(tmp_path / "o"), trainer=str(fake),
                task=str(path), text_field="sentence", label_field="gold"))
  sw = engine.prepare(s, log=lambda m: None)
  assert sw.identity["task"] == f"{path}:text=sentence,label=gold" and sw.num_labels == 2
  assert sw.settings.study.startswith("tiny-t-")


@pytest.mark.parametrize("args,expected", [
    (["--grace-period", "2", "--heartbeat-interval", "10"], "must be at least twice --heartbeat-interval"),
    (["--max-attempts", "0"], "--max-attempts and --heartbeat-interval >= 1"),
    (["--seed=-1"], "--seed must be >= 0"), (["--steps=-1"], "--steps and --pretrain-steps must be >= 0")])
def test_sweep_refuses_bad_worker_settings(tmp_path, capsys, args, expected):
  assert expected in sweep_error(tmp_path, capsys, *args)
  assert not (tmp_path / "o").exists()


def test_experiment_with_a_missing_task_fails_before_pretraining(tmp_path, capsys, monkeypatch):
  from embbert_jax import experiment
  monkeypatch.setattr(train, "pretrain", lambda *a, **k: pytest.fail("pre-trained before checking the task"))
  study = dict(name="s", tasks=(str(tmp_path / "missing.jsonl"),), seeds=1, pretrain_steps=4, wandb="disabled",
               train=dict(steps=2), arms=[dict(name="a", preset="nano", pretrain=True)])
  path = tmp_path / "s.py"
  path.write_text(f"import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict({study!r})\n")
  assert experiment.main([str(path), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: file not found") and err.count("\n") == 1, err
  assert not (tmp_path / "out").exists()
  study["tasks"], study["train"] = (str(write_task(tmp_path / "t.jsonl")),), dict(steps=2, batch_size=0)
  path.write_text(f"import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict({study!r})\n")
  assert experiment.main([str(path), "--out", str(tmp_path / "out")]) == 2
  assert "arm 'a': training field batch_size must be >= 1" in capsys.readouterr().err


def test_a_password_with_at_and_colon_leaks_nothing_through_the_drivers_error(tmp_path, capsys):
  """SQLAlchemy splits u:p@ss:w@rd@host at the first '@' and reports "w@rd@host" as a bad port."""
  url = f"postgresql+psycopg2://u:x{PASSWORD}@ss:w@rd:{PASSWORD}@127.0.0.1:9/db"
  err = sweep_error(tmp_path, capsys, "--storage", url)
  assert "cannot open the ledger postgresql+psycopg2://u:***@127.0.0.1:9/db" in err
  assert PASSWORD not in err and "w@rd" not in err and "ss:w" not in err, err
