"""Lowercase, accent-stripped sentencepiece BPE tokenizer with the EmbBERT special ids.

Ids: [PAD]=0, [UNK]=1, [CLS]=2, [MASK]=3, [SEP]=4 (sentencepiece ``pad_id=0, unk_id=1`` and the other three as
control symbols, which can never be produced from text, so a literal "[SEP]" in the data stays ordinary
text). Normalisation is ours (``data.normalize_text``: lowercase, NFKD, drop combining marks, collapse
whitespace) and is applied before training and before encoding; sentencepiece's own normaliser is set to
"identity" so the two cannot disagree.

Templates (``encode_batch``): "[CLS] A" for single texts and "[CLS] A [SEP] B [SEP]" for pairs; with
``add_cls=False`` the leading [CLS] is left out (the authors' single-sequence template is plain "A").
Over-long pairs are truncated longest-first, one piece at a time, ties taken from B (as HF's
``longest_first``), and the [SEP]s are always kept. Sequences are right-padded with 0.

Trained models are cached under ``<cache>/tokenizers/`` by (corpus sha256, vocab size, recipe version).
The default corpus's tokenizers also ship in the package (``embbert_jax/tokenizers/``: ``bpe<V>.model`` and
``index.json``), so ``get_tokenizer(V)`` needs neither the corpus nor the network: see ``shipped_tokenizer``
for when they are used, and ``ship_default_tokenizers`` (``python -m embbert_jax.ship tokenizers``) for how
a maintainer refreshes them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from .configs import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
from .data import (DEFAULT_CORPUS_SOURCES, default_corpus_id, default_corpus_recipe, normalize_text,
                   pretraining_corpus, read_corpus_card, resolve_cache_dir)
from .files import sha256_file, verified_file, write_bytes_atomic, write_json_atomic

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "CLS_ID",
    "MASK_ID",
    "SEP_ID",
    "SPECIAL_IDS",
    "Tokenizer",
    "train_tokenizer",
    "get_tokenizer",
    "shipped_tokenizer",
    "ship_default_tokenizers",
    "ShippedTokenizerError",
    "normalize_text",
]

SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, MASK_ID, SEP_ID)
_CONTROL_SYMBOLS = ("[CLS]", "[MASK]", "[SEP]")  # land at ids 2, 3, 4 after [PAD], [UNK]
# Bump when the training recipe or normaliser changes, so cached models are retrained.
_RECIPE_VERSION = 1
_MAX_TRAIN_SENTENCES = 2_000_000  # caps the trainer's memory; the default corpus has ~607k sentences
SHIPPED = Path(__file__).resolve().parent / "tokenizers"  # the default corpus's tokenizers, in the package
SHIPPED_INDEX = "index.json"
SHIPPED_FORMAT = "embbert_jax.tokenizers/1"
SHIPPED_VOCABS = (2048, 8192, 16384)


class ShippedTokenizerError(ValueError):
  """A shipped tokenizer that cannot be used as it is (damaged, or not the whole default corpus's); one line."""


def _num_threads() -> int:
  return max(1, min(8, os.cpu_count() or 1))


class Tokenizer:
  """A trained sentencepiece model plus our normaliser and the BERT-style templates."""

  def __init__(self, model_path: str | os.PathLike) -> None:
    self.model_path = Path(model_path)
    self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
    expected = ("[PAD]", "[UNK]", *_CONTROL_SYMBOLS)
    got = tuple(self._sp.id_to_piece(i) for i in SPECIAL_IDS)
    if got != expected:
      raise ValueError(f"{model_path}: special pieces {got}, expected {expected} at ids 0..4")

  def __reduce__(self) -> tuple[type, tuple[Path]]:
    # Pickle by model path (e.g. for multiprocessing loaders); the processor itself is a C++ object.
    return (Tokenizer, (self.model_path,))

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def __len__(self) -> int:
    return self.vocab_size

  def tokenize(self, texts: Sequence[str], *, num_threads: int | None = None) -> list[list[int]]:
    """Piece ids of each normalised text, without special tokens (e.g. for building MLM/NSP examples)."""
    normed = [normalize_text(t) for t in texts]
    return self._sp.encode(normed, out_type=int, num_threads=num_threads or _num_threads())

  def id_to_piece(self, idx: int) -> str:
    return self._sp.id_to_piece(int(idx))

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of the non-special ids (for inspection; the normalisation is not undone)."""
    return self._sp.decode([int(i) for i in ids if int(i) not in SPECIAL_IDS])

  def encode_batch(
      self,
      texts: Sequence[str],
      pairs: Sequence[str] | None = None,
      *,
      max_len: int,
      add_cls: bool = True,
      num_threads: int | None = None,
  ) -> np.ndarray:
    """Ids (n, max_len) int32: "[CLS] A" or "[CLS] A [SEP] B [SEP]", truncated, right-padded with 0."""
    if pairs is not None and len(pairs) != len(texts):
      raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
    n_special = int(add_cls) + (0 if pairs is None else 2)
    if max_len < max(1, n_special):
      raise ValueError(f"max_len={max_len} leaves no room for the {n_special} special tokens")
    flat_a, off_a, len_a = _flatten(self.tokenize(texts, num_threads=num_threads))
    out = np.zeros((len(texts), max_len), dtype=np.int32)
    col = np.arange(max_len, dtype=np.int64)[None, :]
    start = np.full(len(texts), int(add_cls), dtype=np.int64)
    if add_cls:
      out[:, 0] = CLS_ID
    if pairs is None:
      take_a = np.minimum(len_a, max_len - n_special)
      _place(out, col, flat_a, off_a, start, take_a)
      return out
    flat_b, off_b, len_b = _flatten(self.tokenize(pairs, num_threads=num_threads))
    take_a, take_b = _truncate_longest_first(len_a, len_b, max_len - n_special)
    _place(out, col, flat_a, off_a, start, take_a)
    sep1 = start + take_a
    out[np.arange(len(texts)), sep1] = SEP_ID
    _place(out, col, flat_b, off_b, sep1 + 1, take_b)
    out[np.arange(len(texts)), sep1 + 1 + take_b] = SEP_ID
    return out


def _flatten(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Concatenated ids, start offsets and lengths of a ragged batch."""
  lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
  flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32, count=int(lengths.sum()))
  offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64) if len(seqs) else lengths
  return flat, offsets, lengths


def _place(out: np.ndarray, col: np.ndarray, flat: np.ndarray, offsets: np.ndarray, start: np.ndarray,
           take: np.ndarray) -> None:
  """out[i, start_i : start_i + take_i] = flat[offsets_i : offsets_i + take_i], for all rows at once."""
  rel = col - start[:, None]
  mask = (rel >= 0) & (rel < take[:, None])
  out[mask] = flat[(offsets[:, None] + rel)[mask]]


def _truncate_longest_first(len_a: np.ndarray, len_b: np.ndarray,
                            budget: int) -> tuple[np.ndarray, np.ndarray]:
  """Closed form of "drop one piece from the longer text until both fit; ties drop from B".

  If the shorter text fits in half the budget it is kept whole and the longer gets the rest; otherwise
  both end at half the budget, A getting the odd piece (B lost the last tie).
  """
  over = len_a + len_b > budget
  short = np.minimum(len_a, len_b)
  half_up, half_down = (budget + 1) // 2, budget // 2
  keep_short = short <= half_down
  a_is_short = len_a <= len_b
  take_a = np.where(keep_short, np.where(a_is_short, len_a, budget - len_b), half_up)
  take_b = np.where(keep_short, np.where(a_is_short, budget - len_a, len_b), half_down)
  return np.where(over, take_a, len_a), np.where(over, take_b, len_b)


def train_tokenizer(corpus_path: str | os.PathLike, vocab_size: int, model_prefix: str | os.PathLike) -> Path:
  """Train a BPE model on the normalised lines of ``corpus_path``; returns ``<model_prefix>.model``."""
  prefix = Path(model_prefix)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  normed = prefix.with_name(prefix.name + f".{os.getpid()}.normalised.txt")
  with open(corpus_path, encoding="utf-8") as src, open(normed, "w", encoding="utf-8") as dst:
    for line in src:
      text = normalize_text(line)
      if text:  # blank lines only separate documents
        dst.write(text + "\n")
  spm.set_random_generator_seed(0)  # sentence shuffling is seeded, so retraining gives the same model
  try:
    spm.SentencePieceTrainer.train(
        input=str(normed), model_prefix=str(prefix), model_type="bpe", vocab_size=vocab_size,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]",
        control_symbols=list(_CONTROL_SYMBOLS), normalization_rule_name="identity",
        character_coverage=0.9999, input_sentence_size=_MAX_TRAIN_SENTENCES, shuffle_input_sentence=True,
        num_threads=2, minloglevel=2,
    )
  finally:
    normed.unlink(missing_ok=True)
  return prefix.with_name(prefix.name + ".model")


def get_tokenizer(
    vocab_size: int,
    corpus_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Tokenizer:
  """The tokenizer for (corpus, vocab_size).

  ``corpus_path=None`` (the default corpus): the one shipped in the package when ``shipped_tokenizer``
  gives it (no corpus, no network); else the cached one of ``data.pretraining_corpus`` (fetched and built
  on first use), trained first if needed. A given ``corpus_path`` always takes the cache (keyed by the
  file's sha256), never the shipped one, even when it is the default corpus's file.
  """
  if corpus_path is None:
    shipped = shipped_tokenizer(vocab_size)
    if shipped is not None:
      return Tokenizer(shipped)
  corpus = Path(corpus_path) if corpus_path is not None else pretraining_corpus(cache_dir)
  return Tokenizer(cached_model(corpus, vocab_size, cache_dir))


def cached_model(corpus: Path, vocab_size: int, cache_dir: str | os.PathLike | None = None) -> Path:
  """``<cache>/tokenizers/bpe<V>-r<recipe>-<corpus sha256[:16]>/spm.model``, trained first if absent."""
  digest = sha256_file(corpus)
  folder = resolve_cache_dir(cache_dir) / "tokenizers" / f"bpe{vocab_size}-r{_RECIPE_VERSION}-{digest[:16]}"
  model = folder / "spm.model"
  if model.exists():
    return model
  print(f"[embbert_jax.tokenizer] training a {vocab_size}-piece BPE tokenizer on {corpus} into {folder}",
        file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  train_tokenizer(corpus, vocab_size, tmp / "spm")
  (tmp / "corpus.txt").write_text(f"{corpus}\nsha256 {digest}\n", encoding="utf-8")
  try:
    os.replace(tmp, folder)  # atomic publish; another process may have won the race
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f"[embbert_jax.tokenizer] trained in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
  return model


# ----------------------------------------------------------------------------------------------------------
# Shipped tokenizers: the default corpus's, in the package, found without the corpus
# ----------------------------------------------------------------------------------------------------------

_NOTED: set[str] = set()


def shipped_identity() -> dict:
  """What a shipped tokenizer must have been made for to be used: this code's default corpus recipe
  (data.default_corpus_id) and tokenizer recipe (_RECIPE_VERSION)."""
  return {"corpus_id": default_corpus_id(), "tokenizer_recipe": _RECIPE_VERSION}


def shipped_index() -> dict | None:
  """``embbert_jax/tokenizers/index.json`` (None when no tokenizer ships)."""
  f = SHIPPED / SHIPPED_INDEX
  return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def shipped_tokenizer(vocab_size: int) -> Path | None:
  """The packaged model of the default corpus's ``vocab_size``-piece tokenizer, or None.

  The rule: it is used only while the index was made for what this code would build, i.e. its
  ``corpus_id`` and ``tokenizer_recipe`` equal ``shipped_identity()`` (the corpus version, the sources'
  and the excluded tasks' pinned archives, the tokenizer recipe version); after a recipe change it is
  skipped with a one-line note (once per process) and the corpus is built as before, until a maintainer
  re-ships. ShippedTokenizerError (one line) if the file's sha256 is not the index's.
  """
  index = shipped_index()
  entry = (index or {}).get("tokenizers", {}).get(str(vocab_size))
  if entry is None:
    return None
  made_for = {k: index.get(k) for k in ("corpus_id", "tokenizer_recipe")}
  if made_for != shipped_identity():
    if SHIPPED.as_posix() not in _NOTED:
      _NOTED.add(SHIPPED.as_posix())
      print(f"[embbert_jax.tokenizer] not using the tokenizers shipped in {SHIPPED}: made for {made_for}, this "
            f"code builds {shipped_identity()}; building the default corpus instead", file=sys.stderr, flush=True)
    return None
  return verified_file(SHIPPED / entry["file"], entry["sha256"], "index", ShippedTokenizerError)


def ship_default_tokenizers(vocabs: Sequence[int] = SHIPPED_VOCABS, cache_dir: str | os.PathLike | None = None,
                            dest: str | os.PathLike | None = None, command: str = "") -> dict:
  """Maintainers: copy the cached tokenizers of the default corpus (built, and the tokenizers trained, if
  needed) into ``dest`` (default: the package's ``tokenizers/``) as ``bpe<V>.model`` with ``index.json``
  (this code's corpus recipe and identity, the corpus file's name and sha256, each model's sha256);
  other ``bpe*.model`` files there are removed. Refuses a corpus built with a source skipped: the shipped
  tokenizer stands for the whole default corpus. Returns the index."""
  corpus = pretraining_corpus(cache_dir)
  card = read_corpus_card(corpus)
  used = [src["name"] for src in card["sources"]]
  if card.get("skipped_sources") or used != list(DEFAULT_CORPUS_SOURCES):
    raise ShippedTokenizerError(f"{corpus} was built from {used}, not every default source "
                                f"{list(DEFAULT_CORPUS_SOURCES)}: build it where all can be fetched and read")
  out = Path(dest) if dest is not None else SHIPPED
  out.mkdir(parents=True, exist_ok=True)
  entries = {}
  for v in sorted(set(int(v) for v in vocabs)):
    model = cached_model(corpus, v, cache_dir)
    name = f"bpe{v}.model"
    write_bytes_atomic(out / name, model.read_bytes())
    entries[str(v)] = {"file": name, "sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size,
                       "pieces": Tokenizer(out / name).vocab_size, "cache_folder": model.parent.name}
  for stale in out.glob("bpe*.model"):
    if stale.name not in {e["file"] for e in entries.values()}:
      stale.unlink()
  index = {"format": SHIPPED_FORMAT, **shipped_identity(), "corpus_recipe": default_corpus_recipe(),
           "corpus": {"file": corpus.name, "sha256": sha256_file(corpus), "bytes": corpus.stat().st_size,
                      "key": card.get("key")},
           "sentencepiece": getattr(spm, "__version__", ""), "made_by": command, "tokenizers": entries}
  write_json_atomic(out / SHIPPED_INDEX, index, indent=1)
  return index
