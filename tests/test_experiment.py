"""Studies (embbert_jax.experiment): a tiny study end to end, resume, failed arms, tables, frontier input."""

import csv
import json
from pathlib import Path

import pytest

from embbert_jax import configs, experiment, memory, recipes, report, train
from embbert_jax import study as study_lib
from test_train import TINY_MODEL, write_fixture

PAPER = dict(value=87.19, metric="TinyNLP acc")


def write_study(root: Path, arms: list[dict], **fields) -> Path:
  """A study file over the tiny generated task and corpus of test_train."""
  corpus, task = write_fixture(root)
  model = {f"model.{k}": v for k, v in TINY_MODEL.items()}
  study = dict(
      name="tiny_study", tasks=(str(task),), seeds=1, pretrain_steps=4, wandb="disabled",
      train=dict(steps=6, eval_every=3, log_every=3, batch_size=16, learning_rate=3e-3, corpus=str(corpus),
                 cache_dir=str(root / "cache"),
                 pretrain=dict(batch_size=16, eval_pairs=32, seq_len=32, eval_every=4)),
      arms=[{**a, "overrides": {**model, **a.get("overrides", {})}} for a in arms], **fields)
  path = root / "tiny_study.py"
  path.write_text("import ml_collections\n\n\ndef get_config():\n"
                  f"  return ml_collections.ConfigDict({study!r})\n")
  return path


TWO_ARMS = [dict(name="plain", preset="nano"),
            dict(name="pretrained", preset="nano", pretrain=True, paper=PAPER)]


def read_csv(path: Path) -> list[dict]:
  return list(csv.DictReader(path.open()))


def test_tiny_study_end_to_end_then_resume_skips_finished_arms(tmp_path, monkeypatch):
  study, out = write_study(tmp_path, TWO_ARMS), tmp_path / "out"
  assert experiment.main([str(study), "--out", str(out)]) == 0
  rows = read_csv(out / "results.csv")
  assert [r["arm"] for r in rows] == ["plain", "pretrained"] and {r["status"] for r in rows} == {"ok"}
  assert all(0 <= float(r["test_accuracy_mean"]) <= 1 for r in rows)
  assert rows[1]["paper_value"] == "87.19" and rows[0]["paper_value"] == ""
  assert int(rows[0]["params"]) > 0 and int(rows[0]["int8_total_bytes"]) < int(rows[0]["fp32_total_bytes"])
  md = (out / "results.md").read_text()
  assert "| plain |" in md and "| pretrained |" in md and "87.19 (TinyNLP acc)" in md
  # The task's references on the same test split, as `train` prints them (issue 12): the majority class
  # (the fixture's labels alternate, so exactly half) and TF-IDF + logistic regression.
  from embbert_jax import baselines
  ref = baselines.for_task(str(tmp_path / "task.jsonl"), str(tmp_path / "cache"))["baselines"]
  assert "| reference: majority class | same split |  |  |  |  | 50.0 | 0.0 |  |" in md
  tfidf = ref[baselines.TFIDF]["test"]
  assert (f"| reference: {baselines.TFIDF} | same split |  |  |  |  | {100 * tfidf['accuracy']:.1f} | "
          f"{100 * tfidf['mcc']:.1f} |  |") in md
  assert (out / "tiny_study.png").stat().st_size > 10_000
  assert len([p for p in (out / "pretrain").iterdir() if p.is_dir()]) == 1  # pre-trained once for the arm
  ft = json.loads((out / "runs" / "task" / "pretrained" / "finetune" / "config.json").read_text())
  assert ft["init_from"].startswith(str(out / "pretrain"))
  # Each run records where its encoder came from, as `train --init` runs do (compare_runs reads it).
  for arm, kind, steps in (("plain", "scratch", 0), ("pretrained", "pretrain_steps", 4)):
    init = json.loads((out / "runs" / "task" / arm / "finetune" / "result.json").read_text())["init"]
    assert (init["kind"], init["steps"]) == (kind, steps), arm

  def boom(*a, **k):
    raise AssertionError("a finished arm was trained again")
  monkeypatch.setattr(train, "run_seeds", boom)
  monkeypatch.setattr(train, "pretrain", boom)
  assert experiment.main([str(study), "--out", str(out)]) == 0
  assert read_csv(out / "results.csv") == rows


def fake_result(acc: float) -> dict:
  metrics = {"accuracy": acc, "mcc": acc - 0.5, "macro_f1": acc}
  run = {"validation": metrics, "test": metrics, "steps": 6}
  return {"runs": [run], "summary": {f"{s}/{k}": (v, 0.0) for s in ("validation", "test")
                                     for k, v in metrics.items()}}


def test_a_failing_arm_is_recorded_and_the_study_goes_on_then_retried(tmp_path, monkeypatch):
  arms = [dict(name="nan_arm", preset="nano"), dict(name="good", preset="nano")]
  study, out = write_study(tmp_path, arms), tmp_path / "out"

  def run_seeds(cfg, workdir, seeds):
    if Path(workdir).name == "nan_arm":
      raise train.TrainingDiverged("loss is nan at step 3; the last good checkpoint is step 0")
    return fake_result(0.75)
  monkeypatch.setattr(train, "run_seeds", run_seeds)
  assert experiment.main([str(study), "--out", str(out)]) == 1
  rows = {r["arm"]: r for r in read_csv(out / "results.csv")}
  assert rows["nan_arm"]["status"] == "failed" and "TrainingDiverged: loss is nan" in rows["nan_arm"]["error"]
  assert rows["good"]["status"] == "ok" and float(rows["good"]["test_accuracy_mean"]) == 0.75
  assert "| nan_arm |" in (out / "results.md").read_text() and "failed" in (out / "results.md").read_text()
  # the failed first arm has no references; the task's come from the next arm's record
  assert "| reference: majority class | same split |" in (out / "results.md").read_text()
  assert (out / "tiny_study.png").is_file()
  monkeypatch.setattr(train, "run_seeds", lambda cfg, workdir, seeds: fake_result(0.6))
  assert experiment.main([str(study), "--out", str(out)]) == 0  # failed arms run again, finished ones not
  rows = {r["arm"]: r for r in read_csv(out / "results.csv")}
  assert float(rows["nan_arm"]["test_accuracy_mean"]) == 0.6
  assert float(rows["good"]["test_accuracy_mean"]) == 0.75
  assert experiment.main([str(study), "--out", str(out), "--set", "train.learning_rate=0.01"]) == 1
  rows = read_csv(out / "results.csv")  # other settings never reuse (or resume) a finished arm
  assert {r["status"] for r in rows} == {"failed"} and "holds a result of other settings" in rows[0]["error"]


def test_bad_input_is_one_line(tmp_path, capsys):
  assert experiment.main([str(tmp_path / "nope.py")]) == 2
  assert "study file not found" in capsys.readouterr().err
  assert experiment.main(["no_such_study"]) == 2
  err = capsys.readouterr().err
  assert "unknown study 'no_such_study'" in err and "ablation" in err
  study = write_study(tmp_path, [dict(name="x", preset="gigabert")])
  assert experiment.main([str(study)]) == 2
  assert "unknown preset 'gigabert'" in capsys.readouterr().err
  study = write_study(tmp_path, TWO_ARMS)
  for bad in ("seedz=3", "seeds", "train.learning_rat=1"):
    assert experiment.main([str(study), "--set", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_quick_and_set_overrides():
  study = study_lib.load_study("ablation", mode="quick", overrides=["seeds=2", "train.learning_rate=1e-3"])
  assert study.seeds == 2 and study.mode == "quick" and study.pretrain_steps == 100
  arms = study_lib.arm_list(study)
  assert [a["name"] for a in arms][:2] == ["headline", "no_attention"]
  cfg = study_lib.arm_config(study, arms[1], "sms_spam")
  assert cfg.model.use_attention is False and cfg.learning_rate == 1e-3
  assert cfg.steps == study_lib.QUICK_TRAIN["steps"] and cfg.seq_len == study_lib.QUICK_TRAIN["seq_len"]
  assert cfg.pretrain.steps == 0  # quick: only the headline arm is pre-trained
  cfg = study_lib.arm_config(study, arms[0], "sms_spam")
  assert cfg.pretrain.steps == 100 and cfg.pretrain.mask_rate == 0.15  # merged, not replaced
  assert cfg.wandb.group == "ablation" and cfg.wandb.name == "headline-sms_spam"
  full = study_lib.load_study("baselines_2mb")
  cfg = study_lib.arm_config(full, study_lib.arm_list(full)[0], "rt_polarity")
  assert cfg.learning_rate == 5e-5 and cfg.epochs == 10 and full.seeds == 5  # the paper's recipe
  assert cfg.pretrain.steps == study_lib.PAPER_PRETRAIN_STEPS


def test_cpu_mode_trains_every_arm_from_token_vectors_with_the_scratch_recipe(tmp_path, capsys):
  study = study_lib.load_study("baselines_2mb", mode="cpu")
  assert study.mode == "cpu" and study.seeds == 3 and tuple(study.tasks) == study_lib.CPU_TASKS
  assert experiment.default_out(study).name == "baselines_2mb-cpu" and report.mode_label(study) == " (--cpu)"
  arms = {a["name"]: a for a in study_lib.arm_list(study)}
  assert set(arms) == {"embbert", "bert", "mamba"}
  scratch = recipes.RECIPES["scratch"]
  for name, arm in arms.items():
    cfg = study_lib.arm_config(study, arm, "rt_polarity")
    assert cfg.token_vectors and cfg.pretrain.steps == 0 and not cfg.init_from, name
    assert (cfg.recipe, cfg.learning_rate, cfg.schedule.kind) == ("scratch", scratch["learning_rate"], "cosine")
    assert cfg.epochs == 10  # the length the README's claims were measured at, not the recipe's 4
    assert cfg.bucket_window == train.get_config().bucket_window  # the fixed-width override is dropped
  bert = study_lib.arm_config(study, arms["bert"], "tweets")
  assert bert.model.attend_to_pad  # ... the published module switches are kept
  assert study_lib.arm_config(study, arms["mamba"], "tweets").model.pool_over_pad
  ablation = study_lib.load_study("ablation", mode="cpu")
  assert [a["name"] for a in study_lib.arm_list(ablation)] == ["headline", "no_conv", "sum"]
  scaling = study_lib.load_study("scaling", mode="cpu")
  assert [a["name"] for a in study_lib.arm_list(scaling)] == ["nano", "tiny", "embbert"]
  # The arms that are the same run in another study are the same training config (--reuse copies them).
  same = [study_lib.arm_config(st, next(a for a in study_lib.arm_list(st) if a["name"] == n), "tweets")
          for st, n in ((study, "embbert"), (ablation, "headline"), (scaling, "embbert"))]
  assert len({json.dumps({k: v for k, v in c.to_dict().items() if k != "wandb"}, sort_keys=True)
              for c in same}) == 1
  with pytest.raises(study_lib.StudyError, match="unknown study mode 'slow'"):
    study_lib.load_study("ablation", mode="slow")
  plain = write_study(tmp_path, TWO_ARMS)  # a study without cpu settings says so in one line
  assert experiment.main([str(plain), "--cpu"]) == 2
  assert "has no --cpu settings" in capsys.readouterr().err


def test_table_cells_and_paper_numbers():
  assert report.paper_cell({}) == "-"
  assert report.paper_cell(PAPER) == "87.19 (TinyNLP acc)"
  assert report.paper_cell(dict(value=63.5)) == "63.5"
  rec = {"status": "ok", "seeds": 5, "summary": {"test/accuracy": (0.8123, 0.004)}}
  assert report.mean_std(rec, "test/accuracy") == "81.2 ± 0.4"
  assert report.mean_std({**rec, "seeds": 1}, "test/accuracy") == "81.2"
  assert report.mean_std({"status": "failed"}, "test/accuracy") == "failed"
  assert report.mean_std(rec, "test/mcc") == "-"
  study = study_lib.load_study("baselines_2mb", overrides=["seeds=2"])
  m = configs.get_preset("embbert")
  base = dict(study="baselines_2mb", preset="embbert", config="c", pretrain_steps=0, seeds=2, steps=10,
              params=357_506, fp32_total_bytes=1_954_312, int8_total_bytes=779_800)
  recs = [dict(base, arm="embbert", task="rt_polarity", paper=PAPER, status="ok",
               summary={"test/accuracy": (0.7, 0.01), "test/mcc": (0.4, 0.02)}),
          dict(base, arm="embbert", task="sms_spam", paper=PAPER, status="failed", error="E: x"),
          dict(base, arm="bert", task="rt_polarity", paper={}, status="ok", init="embeddings",
               summary={"test/accuracy": (0.6, 0.0), "test/mcc": (0.2, 0.0)})]
  md = report.format_markdown(study, recs).splitlines()
  assert md[2].split(" | ")[-5:] == ["rt_polarity acc", "rt_polarity MCC", "sms_spam acc", "sms_spam MCC",
                                    "paper |"]
  assert md[4] == ("| embbert | c | scratch | 357,506 | 1.954 MB | 779.8 kB | 70.0 ± 1.0 | 40.0 ± 2.0 | "
                   "failed | failed | 87.19 (TinyNLP acc) |")
  assert md[5].startswith("| bert | c | embeddings |") and md[5].endswith("| 60.0 ± 0.0 | 20.0 ± 0.0 | - | - | - |")
  assert "fine-tuning steps 10;" in md[-1]
  assert memory.total_bytes(m) == 1_954_312


def test_frontier_arms_from_a_sweep_csv_or_jsonl(tmp_path):
  def model(d):
    return configs.get_preset("nano", hidden=d).to_dict()
  def row(trial, value, mem, config, d, status="complete"):
    return dict(trial=trial, status=status, value=value, memory_bytes=mem, hash=config, config=config,
                model=model(d))
  rows = [row(0, 0.3, 100, "small", 16), row(1, 0.2, 200, "dominated", 32), row(2, 0.5, 300, "big", 64),
          row(3, None, 50, "failed", 8, status="failed")]
  (tmp_path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  with (tmp_path / "frontier.csv").open("w") as f:
    w = csv.DictWriter(f, fieldnames=["trial", "status", "value", "memory_bytes", "hash", "config"],
                       extrasaction="ignore")
    w.writeheader()
    w.writerows([rows[0], rows[2]])
  for name in ("trials.jsonl", "frontier.csv"):
    arms = study_lib.frontier_arms(str(tmp_path / name), {"pretrain": True})
    assert [a["name"] for a in arms] == ["frontier-t0", "frontier-t2"]
    assert arms[1]["model"]["hidden"] == 64 and arms[1]["pretrain"] and arms[1]["sweep_config"] == "big"
  study = study_lib.load_study("scaling", mode="quick", overrides=[f"frontier={tmp_path / 'frontier.csv'}"])
  names = [a["name"] for a, t in study_lib.plan(study) if t == "rt_polarity"]
  assert names == ["nano", "tiny", "embbert", "frontier-t0", "frontier-t2"]  # quick: up to the headline
  with pytest.raises(study_lib.StudyError, match="not found"):
    study_lib.frontier_arms(str(tmp_path / "missing.csv"))


def test_scaling_figure_from_records(tmp_path):
  study = study_lib.load_study("scaling", mode="quick")
  recs = []
  for i, name in enumerate(("nano", "embbert", "frontier-t3")):
    m = configs.get_preset("nano" if i != 1 else "embbert")
    recs.append(dict(arm=name, task="rt_polarity", status="ok", seeds=1,
                     fp32_total_bytes=memory.total_bytes(m),
                     int8_total_bytes=memory.total_bytes(m, "int8"),
                     summary={"test/accuracy": (0.6 + 0.05 * i, 0.0)}))
  path = report.figure(study, recs, tmp_path / "scaling.png")
  assert path.stat().st_size > 10_000


def test_reuse_copies_an_identical_run_of_another_study(tmp_path, monkeypatch):
  study = write_study(tmp_path, [dict(name="a", preset="nano"), dict(name="b", preset="nano",
                                                                       overrides={"learning_rate": 0.01})])
  calls = []

  def run_seeds(cfg, workdir, seeds):
    calls.append(Path(workdir).name)
    return fake_result(0.7 if cfg.learning_rate == 0.01 else 0.6)
  monkeypatch.setattr(train, "run_seeds", run_seeds)
  assert experiment.main([str(study), "--out", str(tmp_path / "first")]) == 0
  other = write_study(tmp_path, [dict(name="same_as_b", preset="nano", overrides={"learning_rate": 0.01}),
                                 dict(name="new", preset="nano", overrides={"learning_rate": 0.02})])
  second = ["--out", str(tmp_path / "second"), "--reuse", str(tmp_path / "first")]
  assert experiment.main([str(other), *second]) == 0
  assert calls == ["a", "b", "new"]  # same_as_b was not trained again
  rows = {r["arm"]: r for r in read_csv(tmp_path / "second" / "results.csv")}
  assert float(rows["same_as_b"]["test_accuracy_mean"]) == 0.7 and rows["same_as_b"]["status"] == "ok"


def test_an_arm_init_gives_its_encoder_and_a_bad_one_is_one_line(tmp_path, capsys):
  """An arm's `init` (as train --init takes it) resolves through inits.resolve: a supernet folder becomes
  every run's init_from; "" keeps the arm as before; a missing folder fails the study in one line."""
  from test_init import _supernet
  from test_train import tiny_config
  folder, _, _ = _supernet(tmp_path, tiny_config(tmp_path))
  arms = [dict(name="plain", preset="embbert"), dict(name="scratch", preset="embbert", init="scratch"),
          dict(name="inherited", preset="embbert", init=str(folder.parent))]
  study = study_lib.load_study(str(write_study(tmp_path, arms)))
  got = {a["name"]: study_lib.arm_config(study, a, t).init_from for a, t in study_lib.plan(study)}
  assert got == {"plain": "", "scratch": "", "inherited": str(folder)}
  bad = write_study(tmp_path, [dict(name="x", preset="embbert", init=str(tmp_path / "nowhere"))])
  assert experiment.main([str(bad)]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if "error" in l]  # (the tokenizer may say it trains)
  assert len(err) == 1 and err[0].startswith("error: arm 'x': --init ") and "no such folder" in err[0], err
