"""Readers for the Debian sources of the pre-training corpus (see design/data.md).

Each reader takes the ``.deb`` that ``data.fetch.ensure_archive`` fetched with ``apt-get download`` and returns
documents (lists of consecutive sentences), read straight from the archive: a ``.deb`` is an ``ar``
archive whose ``data.tar.*`` member ``tarfile`` opens; nothing is installed or unpacked to disk.

* Jane Austen (``r-cran-janeaustenr``) and Moby Dick (``r-cran-tokenizers``): R lazy-load databases
  (``data/Rdata.rdx`` index + ``data/Rdata.rdb`` zlib records), each record parsed with PyPI ``rdata``.
* Four more novels (``r-cran-tidytext``, ``extdata/books.rda``): an ``.rda`` file, read with ``rdata``.
* The World English Bible (``sword-text-web``): a SWORD zText module, zlib blocks per book with a verse
  index; the OSIS markup, footnotes and headings are stripped, verse numbers never enter the text.
* WordNet glosses (``wordnet-base``): the text after ``|`` in ``data.{noun,verb,adj,adv}``; a synset is a
  document of its definition followed by its quoted examples.

Novels become one document per chapter (headings and title pages dropped, ``_italics_`` marks removed).
* GCIDE (``dict-gcide``, Webster 1913 and its supplements): the definitions and literary quotations of
  each entry, without headwords, pronunciations, etymologies, citations, labels or WordNet-derived senses.

``data.corpus`` then removes evaluation texts and duplicate sentences, writes the corpus and its card
(``python -m embbert_jax.data`` builds it and prints the card). A change to any reader here must
bump ``data.corpus._CORPUS_VERSION`` so that cached corpora are rebuilt.
"""

from __future__ import annotations

import gzip
import html
import io
import re
import struct
import sys
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from embbert_jax.data.fetch import DataError
from embbert_jax.data.splits import split_sentences

__all__ = [
    "deb_files",
    "read_lazyload_db",
    "book_documents",
    "austen_documents",
    "mobydick_documents",
    "tidytext_documents",
    "osis_to_text",
    "ztext_chapters",
    "web_documents",
    "wordnet_gloss_document",
    "wordnet_documents",
    "gcide_entry_document",
    "gcide_documents",
]

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_RDATA_HINT = "needs PyPI rdata to read R data files: pip install rdata==1.1.0"


def _error(message: str) -> Exception:
  return DataError(message)


# ----------------------------------------------------------------------------------------------------------
# .deb = ar archive holding data.tar.{xz,gz,bz2}
# ----------------------------------------------------------------------------------------------------------


def _ar_members(blob: bytes, origin: Path | str) -> Iterator[tuple[str, bytes]]:
  """(name, bytes) of each member of an ``ar`` archive (the common format: 60-byte headers, 2-byte align)."""
  if not blob.startswith(_AR_MAGIC):
    raise _error(f"{origin}: not a .deb (no ar header); delete it and retry")
  pos = len(_AR_MAGIC)
  while pos + _AR_HEADER <= len(blob):
    header = blob[pos:pos + _AR_HEADER]
    if header[58:60] != b"`\n":
      raise _error(f"{origin}: corrupt ar member header at byte {pos}; delete it and retry")
    name = header[:16].decode("ascii").strip().rstrip("/")
    size = int(header[48:58].decode("ascii").strip())
    start = pos + _AR_HEADER
    yield name, blob[start:start + size]
    pos = start + size + (size & 1)


def deb_files(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
  """Contents of the files of a ``.deb`` whose path (without the leading ``./``) ``wanted`` accepts."""
  data_tar = next((body for name, body in _ar_members(deb.read_bytes(), deb) if name.startswith("data.tar")),
                  None)
  if data_tar is None:
    raise _error(f"{deb}: no data.tar member; delete it and retry")
  out: dict[str, bytes] = {}
  try:
    with tarfile.open(fileobj=io.BytesIO(data_tar), mode="r:*") as tf:
      for member in tf.getmembers():
        path = member.name.removeprefix("./")
        if member.isfile() and wanted(path):
          out[path] = tf.extractfile(member).read()
  except tarfile.ReadError as err:  # e.g. data.tar.zst, which this Python's tarfile cannot read
    raise _error(f"{deb}: cannot read its data.tar ({err}); delete it and retry") from err
  return out


def _one_file(deb: Path, suffix: str) -> bytes:
  found = deb_files(deb, lambda p: p.endswith(suffix))
  if len(found) != 1:
    raise _error(f"{deb}: expected one file ending in {suffix}, found {sorted(found)}")
  return next(iter(found.values()))


# ----------------------------------------------------------------------------------------------------------
# R data (rdata is imported on use: these sources are optional)
# ----------------------------------------------------------------------------------------------------------


def _rdata() -> Any:
  try:
    import rdata
  except ImportError as err:
    raise _error(_RDATA_HINT) from err
  return rdata


def _r_object(serialized: bytes) -> Any:
  """An R object (serialize() format) as Python: character vectors become string arrays."""
  rdata = _rdata()
  return rdata.conversion.convert(rdata.parser.parse_data(serialized, extension=".rds"))


def read_lazyload_db(rdx: bytes, rdb: bytes, origin: str = "Rdata") -> dict[str, Any]:
  """Objects of an R lazy-load database (what R's ``lazyLoad`` reads for a package's ``data/``).

  ``.rdx`` is a gzipped serialized list whose ``variables`` map each name to (offset, length) in ``.rdb``;
  each ``.rdb`` record is a 4-byte big-endian uncompressed size followed by a zlib stream.
  """
  index = _r_object(gzip.decompress(rdx))
  if not bool(index["compressed"][0]) or index["references"]:
    raise _error(f"{origin}: lazy-load db with compression={index['compressed']} or environment "
                 "references is not supported")
  out = {}
  for name, (offset, length) in index["variables"].items():
    record = rdb[int(offset):int(offset) + int(length)]
    size = struct.unpack(">I", record[:4])[0]
    raw = zlib.decompress(record[4:])
    if len(raw) != size:
      raise _error(f"{origin}: record {name} inflates to {len(raw)} bytes, header says {size}")
    out[str(name)] = _r_object(raw)
  return out


def _package_data(deb: Path) -> dict[str, Any]:
  files = deb_files(deb, lambda p: p.endswith(("/data/Rdata.rdx", "/data/Rdata.rdb")))
  rdx = [v for k, v in files.items() if k.endswith(".rdx")]
  rdb = [v for k, v in files.items() if k.endswith(".rdb")]
  if len(rdx) != 1 or len(rdb) != 1:
    raise _error(f"{deb}: expected one data/Rdata.rdx and one data/Rdata.rdb, found {sorted(files)}")
  return read_lazyload_db(rdx[0], rdb[0], f"{deb}:data/Rdata")


# ----------------------------------------------------------------------------------------------------------
# Novels: lines -> chapters of sentences
# ----------------------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(CHAPTER|Chapter|BOOK|Book|PART|VOLUME)\b")
_TITLE_ABBREVIATION = re.compile(r"(?:^|\s)(?:Mr|Mrs|Messrs|Dr|St|Col|Capt|Gen|Lieut|Rev|Mme)\.$")


_CURLY_SENTENCE_END = re.compile(r"(?<=[.!?][”’])\s+(?=[“‘]?[A-Z0-9])")


def _sentences(text: str) -> list[str]:
  """data.split_sentences, also after a closing curly quote (”), re-joining splits after a title
  ("Mrs. Morland" stays whole)."""
  out: list[str] = []
  for piece in (p for part in split_sentences(text) for p in _CURLY_SENTENCE_END.split(part)):
    if out and _TITLE_ABBREVIATION.search(out[-1]):
      out[-1] = f"{out[-1]} {piece}"
    else:
      out.append(piece)
  return out
_ITALICS = re.compile(r"(?<!\w)_+|_+(?!\w)")


def book_documents(lines: Sequence[str]) -> list[list[str]]:
  """Chapters of a plain-text novel as documents of sentences.

  Paragraphs are runs of non-blank lines. A one-line paragraph starting with CHAPTER/BOOK/PART/VOLUME
  starts a new document; text before the first such heading (title page, contents) is dropped, and so is
  every paragraph without a lower-case letter (titles, "* * *", letter signatures).
  """
  docs: list[list[str]] = [[]]
  seen_heading = False
  for para in _paragraphs(lines):
    if "\n" not in para and len(para) < 80 and _HEADING.match(para):
      docs.append([])
      seen_heading = True
      continue
    if not any(c.islower() for c in para):
      continue
    text = " ".join(_ITALICS.sub("", para).split())
    docs[-1].extend(_sentences(text))
  if seen_heading:
    docs = docs[1:]
  return [d for d in docs if d]


def _paragraphs(lines: Sequence[str]) -> Iterator[str]:
  block: list[str] = []
  for line in lines:
    if line.strip():
      block.append(line.strip())
    elif block:
      yield "\n".join(block)
      block = []
  if block:
    yield "\n".join(block)


def _gutenberg_body(text: str) -> list[str]:
  """Lines between Project Gutenberg's START and END markers (the licence text is not corpus)."""
  lines = text.replace("\ufeff", "").replace("\r\n", "\n").split("\n")
  start = next((i for i, l in enumerate(lines) if l.startswith("*** START OF")), -1)
  end = next((i for i, l in enumerate(lines) if l.startswith("*** END OF")), len(lines))
  return lines[start + 1:end]


_AUSTEN_NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
                  "persuasion")


def austen_documents(deb: Path) -> list[list[str]]:
  """Jane Austen's six novels (janeaustenr's character vectors, one element per line)."""
  novels = _package_data(deb)
  missing = set(_AUSTEN_NOVELS) - set(novels)
  if missing:
    raise _error(f"{deb}: lazy-load db lacks {sorted(missing)}")
  return [doc for name in _AUSTEN_NOVELS for doc in book_documents([str(l) for l in novels[name]])]


def mobydick_documents(deb: Path) -> list[list[str]]:
  """Moby Dick (the tokenizers package's example text: one string, the whole Gutenberg file)."""
  objects = _package_data(deb)
  if "mobydick" not in objects:
    raise _error(f"{deb}: lazy-load db lacks mobydick")
  return book_documents(_gutenberg_body(str(objects["mobydick"][0])))


def tidytext_documents(deb: Path) -> list[list[str]]:
  """The novels of tidytext's ``extdata/books.rda`` (a data frame of gutenberg_id, text line, title)."""
  rdata = _rdata()
  blob = _one_file(deb, "/extdata/books.rda")
  with warnings.catch_warnings():  # "no constructor for tbl_df, using data.frame's": that is what we want
    warnings.simplefilter("ignore", UserWarning)
    frame = rdata.conversion.convert(rdata.parser.parse_data(blob, extension=".rda"))["books"]
  docs: list[list[str]] = []
  for title in dict.fromkeys(frame["title"]):  # first-appearance order, deterministic
    lines = frame["text"][frame["title"] == title]
    docs.extend(book_documents([str(l) for l in lines]))
  return docs


# ----------------------------------------------------------------------------------------------------------
# SWORD zText (World English Bible)
# ----------------------------------------------------------------------------------------------------------

_OSIS_DROP = re.compile(r"<(note|title)\b[^>]*(?<!/)>.*?</\1>", re.S)  # footnotes, headings: not text
_OSIS_TAG = re.compile(r"<[^>]*>")
_CHAPTER_START = re.compile(r"<chapter\b[^>]*\bsID=")


def osis_to_text(osis: str) -> str:
  """Plain text of an OSIS fragment: notes and titles dropped with their content, other tags removed."""
  text = _OSIS_TAG.sub(" ", _OSIS_DROP.sub(" ", osis)).replace("¶", " ")  # KJV marks paragraphs with ¶
  text = re.sub(r"\s+([,.;:!?’”)])", r"\1", " ".join(html.unescape(text).split()))
  return re.sub(r"([“‘(])\s+", r"\1", text)


def ztext_chapters(files: dict[str, bytes], origin: str = "zText") -> list[str]:
  """The raw OSIS of each chapter of a zText module, testament by testament, in verse-index order.

  ``<t>.bzs`` holds (offset, compressed size, size) per zlib block in ``<t>.bzz``; ``<t>.bzv`` holds
  (block, offset, size) per verse, all little-endian. Verse numbers live only in that index.
  """
  chapters: list[str] = []
  for testament in ("ot", "nt"):
    parts = {ext: next((v for k, v in files.items() if k.endswith(f"/{testament}.{ext}")), None)
             for ext in ("bzs", "bzv", "bzz")}
    if parts["bzs"] is None and parts["bzv"] is None:
      continue  # a module may hold one testament only
    if None in parts.values():
      raise _error(f"{origin}: {testament}.bzs/.bzv/.bzz incomplete")
    blocks = [zlib.decompress(parts["bzz"][off:off + n])
              for off, n, _ in struct.iter_unpack("<III", parts["bzs"])]
    current: list[str] = []
    for block, off, size in struct.iter_unpack("<IIH", parts["bzv"]):
      if not size:
        continue
      verse = blocks[block][off:off + size].decode("utf-8")
      if _CHAPTER_START.search(verse) and current:
        chapters.append(" ".join(current))
        current = []
      current.append(verse)
    if current:
      chapters.append(" ".join(current))
  return chapters


def web_documents(deb: Path) -> list[list[str]]:
  """The World English Bible, one document per chapter (plus the preface), split into sentences."""
  files = deb_files(deb, lambda p: "/modules/texts/ztext/" in p and p.endswith((".bzs", ".bzv", ".bzz")))
  docs = [_sentences(osis_to_text(chapter)) for chapter in ztext_chapters(files, str(deb))]
  return [[s for s in d if s] for d in docs if any(d)]


# ----------------------------------------------------------------------------------------------------------
# WordNet glosses
# ----------------------------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"]+)"')


def wordnet_gloss_document(gloss: str) -> list[str]:
  """A synset's gloss ``definition; definition; "example"; "example"`` as [definitions, examples...]."""
  examples = [" ".join(e.split()) for e in _QUOTED.findall(gloss)]
  definition = "; ".join(p.strip() for p in _QUOTED.sub("", gloss).split(";") if p.strip())
  return [s for s in [definition, *examples] if s]


def wordnet_documents(deb: Path) -> list[list[str]]:
  """Every synset of data.{noun,verb,adj,adv} with a gloss; the licence header lines (indented) skipped."""
  names = ("data.noun", "data.verb", "data.adj", "data.adv")
  files = deb_files(deb, lambda p: p.startswith("usr/share/wordnet/") and p.rsplit("/", 1)[-1] in names)
  if len(files) != len(names):
    raise _error(f"{deb}: expected usr/share/wordnet/{{{','.join(names)}}}, found {sorted(files)}")
  docs: list[list[str]] = []
  for path in sorted(files, key=lambda p: names.index(p.rsplit("/", 1)[-1])):
    for line in files[path].decode("utf-8", errors="replace").split("\n"):
      _, bar, gloss = line.partition(" | ")
      if bar and not line.startswith(" "):
        doc = wordnet_gloss_document(gloss)
        if doc:
          docs.append(doc)
  return docs


# ----------------------------------------------------------------------------------------------------------
# GCIDE (Webster 1913 + supplements, dictd format)
# ----------------------------------------------------------------------------------------------------------

_GCIDE_ACCENT = re.compile(r"\[[`'\"=~.\-]([A-Za-z])\]|\[([A-Za-z])\^\]")  # ['e], [=a], [i^]: mark + letter
_GCIDE_LIGATURE = re.compile(r"\[(ae|oe|AE|OE)\]")
_GCIDE_BRACKET = re.compile(r"\[[^\[\]]*\]")  # etymology, [Obs.], [R.], source tags
_GCIDE_PRON = re.compile(r"\\[^\\]*\\")  # \Ab*do"men\ pronunciations
_GCIDE_CITATION = re.compile(r"--[A-Z0-9][^\n]*$", re.M)  # --Milton.  --Acts xvii. 27.  --2 John 10.
_GCIDE_LABEL = re.compile(r"^(?:\d+\.|\([a-z]\)|\(\w+\.(?:\s*\w+\.)*\)|Note:|\s)+")  # "2. (Zool.) "
_GCIDE_INLINE_LABEL = re.compile(r"\((?:[a-z]|(?:[A-Z][A-Za-z]*\.\s*(?:&\s*)?)+)\)\s*")  # (b), (Mil.)
_GCIDE_SUBENTRY = re.compile(r"\s+--\s+(?=[A-Z])")  # "-- Fly block, a pulley ...": a new sentence
_GCIDE_NOT_TEXT = re.compile(r"[\\\[\]{}|<>*]")
_GCIDE_MAX_WORDS = 120  # longer "sentences" are word lists and tables (e.g. the Factbook country entries)


def _gcide_prose(sentence: str) -> bool:
  """A real sentence: not markup, a cross-reference, a word list or a Factbook "key: value" table."""
  words = sentence.split()
  capitalised = sum(w[0].isupper() for w in words)
  return (3 <= len(words) <= _GCIDE_MAX_WORDS and not _GCIDE_NOT_TEXT.search(sentence)
          and not sentence.startswith("See ") and sentence.count(":") <= 2
          and (len(words) < 8 or capitalised <= 0.6 * len(words)))


def _gcide_head_lines(lines: Sequence[str]) -> int:
  """Lines taken by the headword, part of speech and etymology: up to the first where brackets close."""
  depth = 0
  for i, line in enumerate(lines):
    depth += line.count("[") - line.count("]") + line.count("{") - line.count("}")
    if depth <= 0 and line.rstrip().endswith((".", "]")):
      return i + 1
  return len(lines)


def gcide_entry_document(entry: str) -> list[str]:
  """The definitions and quotations of one dictionary entry as sentences.

  Dropped: headword line(s), pronunciations, etymologies and other [bracketed] notes, source tags, author
  citations, sense numbers and subject labels, synonym lists, and blocks taken from WordNet (a source of
  its own here). Accented letters written as [\'e] become plain letters (the tokenizer strips accents).
  """
  blocks = [b.split("\n") for b in entry.split("\n\n") if b.strip()]
  if not blocks:
    return []
  blocks[0] = blocks[0][_gcide_head_lines(blocks[0]):]
  out: list[str] = []
  for block in blocks:
    tags = [l for l in block if re.fullmatch(r"\s*\[[^\]]*\]\s*", l)]
    if any("WordNet" in t for t in tags):
      continue
    text = "\n".join(l for l in block if l not in tags).strip()
    if not text or text.startswith(("Syn.", "Syn:")):
      continue
    text = _GCIDE_LIGATURE.sub(r"\1", _GCIDE_ACCENT.sub(lambda m: m.group(1) or m.group(2), text))
    text = _GCIDE_CITATION.sub("", _GCIDE_PRON.sub("", text))
    while _GCIDE_BRACKET.search(text):
      text = _GCIDE_BRACKET.sub("", text)
    text = _GCIDE_LABEL.sub("", " ".join(text.replace("{", "").replace("}", "").split()))
    text = _GCIDE_INLINE_LABEL.sub("", text)
    for part in _GCIDE_SUBENTRY.split(text):
      out.extend(s for s in _sentences(part) if _gcide_prose(s))
  return out


def gcide_documents(deb: Path) -> list[list[str]]:
  """Every entry of ``gcide.dict.dz`` (a gzip stream: dictzip is gzip with a seek table) as a document.

  Entries start at a line in column 0; the database's own header and licence come before the first entry
  with a pronunciation (``Word \\pron\\``) and are skipped.
  """
  text = gzip.decompress(_one_file(deb, "/gcide.dict.dz")).decode("utf-8", errors="replace")
  entries = re.split(r"\n(?=\S)", text)
  start = next((i for i, e in enumerate(entries) if _GCIDE_PRON.search(e.split("\n", 1)[0])), len(entries))
  docs = [gcide_entry_document(e) for e in entries[start:]]
  return [d for d in docs if d]
