"""Tests of embbert_jax.corpus_sources on tiny .deb/R/zText/WordNet/GCIDE fixtures built here.

The R fixtures are written with rdata's own writer (``write_rds``); these tests skip where rdata is not
installed. One opt-in ``-m network`` test fetches the real Debian packages and builds the real corpus.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from embbert_jax import corpus_sources as cs
from embbert_jax import data


def _ar(members: list[tuple[str, bytes]]) -> bytes:
  """An ar archive (the .deb container): 60-byte headers, bodies padded to even length."""
  out = [b"!<arch>\n"]
  for name, body in members:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}".encode() + b"`\n"
    out += [header, body, b"\n" if len(body) % 2 else b""]
  return b"".join(out)


def _deb(path: Path, files: dict[str, bytes], compression: str = "xz") -> Path:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
    for name, body in files.items():
      info = tarfile.TarInfo(f"./{name}")
      info.size = len(body)
      tf.addfile(info, io.BytesIO(body))
  path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b"x"),
                        (f"data.tar.{compression}", buf.getvalue())]))
  return path


# --- .deb


@pytest.mark.parametrize("compression", ["xz", "gz"])
def test_deb_files_reads_the_data_tar(tmp_path, compression):
  deb = _deb(tmp_path / "p.deb", {"usr/share/a.txt": b"odd", "usr/share/b.txt": b"even"}, compression)
  assert cs.deb_files(deb, lambda p: p.endswith(".txt")) == {"usr/share/a.txt": b"odd",
                                                             "usr/share/b.txt": b"even"}
  assert cs.deb_files(deb, lambda p: p.endswith("b.txt")) == {"usr/share/b.txt": b"even"}


def test_deb_files_rejects_a_non_deb(tmp_path):
  bad = tmp_path / "bad.deb"
  bad.write_bytes(b"PK\x03\x04 not an ar archive")
  with pytest.raises(data.DataError, match="bad.deb: not a .deb"):
    cs.deb_files(bad, lambda p: True)


def test_apt_source_command_and_update_hint(tmp_path, monkeypatch):
  src = data.ArchiveSource("x_1_all.deb", "apt", ("no-such-package-embbert=1",))
  assert src.command(tmp_path) == ["apt-get", "download", "no-such-package-embbert=1"]
  monkeypatch.setattr(data.ArchiveSource, "command", lambda self, dest: ["false"])
  with pytest.raises(data.DataError, match=r"run `apt-get update` first"):
    data.fetch_archive(src, tmp_path)


# --- novels


def test_book_documents_splits_chapters_and_drops_headings_and_markup():
  lines = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "Emma was _very_ clever,",
           "and rich. Mrs. Weston smiled.", "", "* * * * *", "", "CHAPTER II", "", "It rained."]
  assert cs.book_documents(lines) == [["Emma was very clever, and rich.", "Mrs. Weston smiled."],
                                      ["It rained."]]


def _rds(obj, tmp_path: Path) -> bytes:
  rdata = pytest.importorskip("rdata")
  path = tmp_path / "obj.rds"
  rdata.write_rds(path, obj, compression=None)
  return path.read_bytes()


def _lazyload_deb(tmp_path: Path, package: str, objects: dict[str, object]) -> Path:
  """A .deb holding an R package's data/Rdata.{rdx,rdb}, laid out as R's makeLazyLoadDB writes them."""
  rdb, variables = b"", {}
  for name, obj in objects.items():
    raw = _rds(obj, tmp_path)
    record = struct.pack(">I", len(raw)) + zlib.compress(raw)
    variables[name] = np.array([len(rdb), len(record)], dtype=np.int32)
    rdb += record
  index = _rds({"variables": variables, "references": {}, "compressed": np.array([True])}, tmp_path)
  root = f"usr/lib/R/site-library/{package}/data/"
  files = {root + "Rdata.rdx": gzip.compress(index), root + "Rdata.rdb": rdb}
  return _deb(tmp_path / f"{package}.deb", files)


def test_austen_documents_from_a_lazyload_db(tmp_path):
  novels = {name: np.array([name.upper(), "", "CHAPTER 1", "", f"The first line of {name}.", ""],
                           dtype=object) for name in cs._AUSTEN_NOVELS}
  deb = _lazyload_deb(tmp_path, "janeaustenr", novels)
  docs = cs.austen_documents(deb)
  assert docs == [[f"The first line of {name}."] for name in cs._AUSTEN_NOVELS]


def test_lazyload_db_rejects_a_corrupt_record(tmp_path):
  deb = _lazyload_deb(tmp_path, "tokenizers", {"mobydick": np.array(["x"], dtype=object)})
  files = cs.deb_files(deb, lambda p: True)
  rdx, rdb = (next(v for k, v in files.items() if k.endswith(ext)) for ext in (".rdx", ".rdb"))
  bad = struct.pack(">I", 1) + rdb[4:]
  with pytest.raises(data.DataError, match="record mobydick inflates to"):
    cs.read_lazyload_db(rdx, bad)


def test_mobydick_documents_keep_only_the_gutenberg_body(tmp_path):
  text = ("\ufeffThe Project Gutenberg EBook of Moby Dick\r\n\r\n"
          "*** START OF THIS PROJECT GUTENBERG EBOOK ***\r\n\r\nCHAPTER 1. Loomings.\r\n\r\n"
          "Call me Ishmael. Some years ago.\r\n\r\n"
          "*** END OF THIS PROJECT GUTENBERG EBOOK ***\r\n\r\nLicence text here.\r\n")
  deb = _lazyload_deb(tmp_path, "tokenizers", {"mobydick": np.array([text], dtype=object)})
  assert cs.mobydick_documents(deb) == [["Call me Ishmael.", "Some years ago."]]


def test_tidytext_documents_from_an_rda(tmp_path):
  rdata = pytest.importorskip("rdata")
  lines = ["BOOK ONE", "CHAPTER ONE", "", "No one would have believed.", "", "Chapter I", "",
           "My name was Pip."]
  titles = ["The War of the Worlds"] * 5 + ["Great Expectations"] * 3
  # rdata 1.1 cannot write pandas 3 string columns, so the fixture is a named list of the same columns
  rda = tmp_path / "books.rda"
  columns = {"text": np.array(lines, dtype=object), "title": np.array(titles, dtype=object)}
  rdata.write_rda(rda, {"books": columns})
  member = "usr/lib/R/site-library/tidytext/extdata/books.rda"
  deb = _deb(tmp_path / "tidytext.deb", {member: rda.read_bytes()})
  assert cs.tidytext_documents(deb) == [["No one would have believed."], ["My name was Pip."]]


# --- World English Bible (zText)


def _ztext_files(chapters: list[list[str]]) -> dict[str, bytes]:
  """One-testament zText module: every chapter's verses in one zlib block, verse 0 of each is the heading."""
  verses = [v for chapter in chapters for v in chapter]
  block = "".join(verses).encode()
  packed = zlib.compress(block)
  bzv, off = [struct.pack("<IIH", 0, 0, 0)], 0  # SWORD's empty slot before the first book
  for v in verses:
    n = len(v.encode())
    bzv.append(struct.pack("<IIH", 0, off, n))
    off += n
  root = "usr/share/sword/modules/texts/ztext/test/"
  return {root + "nt.bzs": struct.pack("<III", 0, len(packed), len(block)), root + "nt.bzv": b"".join(bzv),
          root + "nt.bzz": packed}


def test_web_documents_strip_markup_notes_and_titles(tmp_path):
  chapters = [
      ['<chapter n="1" osisID="Jas.1" sID="Jas.1"/><title type="main">Greetings</title>',
       '<w lemma="strong:G2385">James</w>, a servant'
       '<note placement="foot"><reference>1:1 </reference>or slave</note> of God, to the twelve tribes. '
       '<w>Greetings</w>.',
       '<div type="x-p"/>Count it all joy &amp; peace, my brothers.'],
      ['<chapter n="2" osisID="Jas.2" sID="Jas.2"/>',
       'My brothers, don’t hold the faith with partiality. ¶ Amen.',
       'He said, “Go in peace.” Then he left.'],
  ]
  deb = _deb(tmp_path / "web.deb", _ztext_files(chapters))
  docs = cs.web_documents(deb)
  assert docs == [["James, a servant of God, to the twelve tribes.", "Greetings.",
                   "Count it all joy & peace, my brothers."],
                  ["My brothers, don’t hold the faith with partiality.", "Amen.",
                   "He said, “Go in peace.”", "Then he left."]]
  assert not any(cs.leftover_markup(s) for d in docs for s in d)


# --- WordNet, GCIDE


def test_wordnet_documents_take_the_gloss_after_the_bar(tmp_path):
  header = "  1 This software and database is being provided to you | under the following license.  \n"
  noun = header + ('00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists; a thing; '
                   '"the entity was there"; "another use"  \n')
  verb = header + '00001740 29 v 04 breathe 0 | draw air into, and expel out of, the lungs  \n'
  files = {f"usr/share/wordnet/data.{p}": (noun if p == "noun" else verb if p == "verb" else header).encode()
           for p in ("noun", "verb", "adj", "adv")}
  docs = cs.wordnet_documents(_deb(tmp_path / "wn.deb", files))
  assert docs == [["that which exists; a thing", "the entity was there", "another use"],
                  ["draw air into, and expel out of, the lungs"]]


_GCIDE_ENTRY = """Feeler \\Feel"er\\, n. [AS. f[=e]lan.]
   1. One who, or that which, feels. [R.]
      [1913 Webster]

            Insects . . . perpetually searching before them with
            their feelers or antenn[ae].        --Derham.
      [1913 Webster]

   2. (Zool.) One of the sense organs of certain animals, as the
      caf['e] ant, used in testing objects by touch.
      [1913 Webster]

   3. a probe to sense attitudes
      [WordNet 1.5]

   4. (a) Something put out. (b) (Mil.) A scout sent ahead; --
      called also {picket}. -- Feeler gauge, a thin strip of
      metal. See Gauge.
      [1913 Webster]

   Syn: antenna, palp.
"""


def test_gcide_entry_document_keeps_definitions_and_quotes_only():
  assert cs.gcide_entry_document(_GCIDE_ENTRY) == [
      "One who, or that which, feels.",
      "Insects . . . perpetually searching before them with their feelers or antennae.",
      "One of the sense organs of certain animals, as the cafe ant, used in testing objects by touch.",
      "Something put out.", "A scout sent ahead; -- called also picket.",
      "Feeler gauge, a thin strip of metal.",
  ]


def test_gcide_documents_skip_the_database_header(tmp_path):
  dict_text = ("00-database-info\n   This file was converted by dictfmt.\n\n"
               "GCIDE is free software; you can redistribute it\n" + _GCIDE_ENTRY)
  deb = _deb(tmp_path / "gcide.deb", {"usr/share/dictd/gcide.dict.dz": gzip.compress(dict_text.encode())})
  docs = cs.gcide_documents(deb)
  assert len(docs) == 1 and docs[0][0] == "One who, or that which, feels."


# --- cleaning and the card


def test_clean_documents_removes_evaluation_duplicates_and_markup():
  excluded = frozenset({data.normalize_text("A line from a movie review here.")})
  first = [["The same long sentence appears twice.", "Yes.", "a line from a movie review HERE."],
           ["Yes.", "The/at jury/nn said/vbd it/pps ./."]]
  second = [["The same long sentence appears twice.", "Then it ends right here for good.", "Yes."],
            ["The same long sentence appears twice.", "Yes."],
            ["the same LONG sentence appears twice.", "It was nothing like what came before it.",
             "And something new again after that one."]]
  docs, stats = cs.clean_documents([("a", first), ("b", second)], excluded)
  assert docs == [["The same long sentence appears twice.", "Yes."], ["Yes."],
                  ["Then it ends right here for good.", "Yes."],
                  ["It was nothing like what came before it.", "And something new again after that one."]]
  assert stats["a"]["evaluation_sentences"] == 1 and stats["a"]["markup_sentences"] == 1
  # doc 2 of b: one repeat out of two sentences -> dropped whole; doc 3: one repeat of three -> kept
  assert stats["b"]["duplicate_documents"] == 1 and stats["b"]["duplicate_sentences"] == 4
  assert stats["b"]["documents"] == 2 and stats["b"]["sentences"] == 4


def test_pretraining_corpus_writes_a_card_and_keys_on_its_sources(tmp_path, monkeypatch, capsys):
  def place(name: str, files: dict[str, bytes]) -> data.ArchiveSource:
    path = _deb(tmp_path / name, files)
    src = data.ArchiveSource(name, "apt", ("unused=0",), data.sha256_file(path))
    (tmp_path / "cache" / "downloads").mkdir(parents=True, exist_ok=True)
    shutil.copy(path, tmp_path / "cache" / "downloads" / name)
    return src

  wn = {f"usr/share/wordnet/data.{p}": f'0001 03 n 01 x 0 | a {p} gloss; "a {p} example"\n'.encode()
        for p in ("noun", "verb", "adj", "adv")}
  src_wn = place("wn.deb", wn)
  monkeypatch.setattr(data, "_CORPUS_SOURCES", (
      data._CorpusSource("wordnet", src_wn, cs.wordnet_documents, optional=False, licence="WordNet"),))
  cache = tmp_path / "cache"
  path = data.pretraining_corpus(cache, exclude_texts=["A VERB EXAMPLE"], sources=("wordnet",))
  assert data.read_documents(path) == [["a noun gloss", "a noun example"], ["a verb gloss"],
                                       ["a adj gloss", "a adj example"], ["a adv gloss", "a adv example"]]
  card = data.read_corpus_card(path)
  assert card["bytes"] == path.stat().st_size and card["documents"] == 4 and card["sentences"] == 7
  assert card["removed"]["evaluation_sentences"] == 1
  assert card["sources"][0]["licence"] == "WordNet" and card["sources"][0]["sha256"] == src_wn.sha256
  assert json.loads(Path(str(path) + ".card.json").read_text()) == card
  markdown = Path(str(path) + ".card.md").read_text()
  assert "| wordnet |" in markdown and markdown in capsys.readouterr().err
  # Another archive for the same source gives another corpus key, hence another file (and tokenizer).
  wn["usr/share/wordnet/data.adv"] = b'0001 03 n 01 x 0 | another adv gloss\n'
  (cache / "downloads" / "wn.deb").unlink()
  (cache / "downloads" / "wn.deb.sha256.json").unlink(missing_ok=True)
  src_wn2 = place("wn.deb", wn)
  monkeypatch.setattr(data, "_CORPUS_SOURCES", (
      data._CorpusSource("wordnet", src_wn2, cs.wordnet_documents, optional=False, licence="WordNet"),))
  other = data.pretraining_corpus(cache, exclude_texts=["A VERB EXAMPLE"], sources=("wordnet",))
  assert other != path and other.name.startswith("corpus-wordnet-")


def test_optional_source_missing_its_python_package_is_skipped_with_a_note(tmp_path, monkeypatch):
  wn = {f"usr/share/wordnet/data.{p}": f"0001 03 n 01 x 0 | a {p} gloss\n".encode()
        for p in ("noun", "verb", "adj", "adv")}
  deb = _deb(tmp_path / "wn.deb", wn)
  (tmp_path / "cache" / "downloads").mkdir(parents=True)
  shutil.copy(deb, tmp_path / "cache" / "downloads" / "wn.deb")
  src = data.ArchiveSource("wn.deb", "apt", ("unused=0",), data.sha256_file(deb))
  never = data.ArchiveSource("never.deb", "apt", ("never=0",), "0" * 64)  # fetching it would fail
  monkeypatch.setattr(data, "_CORPUS_SOURCES", (
      data._CorpusSource("wordnet", src, cs.wordnet_documents, optional=False),
      data._CorpusSource("austen", never, cs.austen_documents, optional=True, needs="no_such_module_embbert")))
  path = data.pretraining_corpus(tmp_path / "cache", exclude_texts=(), sources=("wordnet", "austen"))
  card = data.read_corpus_card(path)
  assert path.name.startswith("corpus-wordnet-") and [s["name"] for s in card["sources"]] == ["wordnet"]
  assert "pip install no_such_module_embbert" in card["skipped_sources"]["austen"]


# --- real data


@pytest.mark.network
def test_real_debian_corpus(tmp_path):
  pytest.importorskip("rdata")
  if shutil.which("apt-get") is None:
    pytest.skip("no apt-get: the Debian sources are an extra")
  path = data.pretraining_corpus(tmp_path)
  card = data.read_corpus_card(path)
  assert card["bytes"] >= 40e6 and not card["skipped_sources"]
  assert {s["name"] for s in card["sources"]} == set(data.DEFAULT_CORPUS_SOURCES)
  with open(path, encoding="utf-8") as f:
    assert not any(cs.leftover_markup(line) for line in f)
