"""The sentencepiece tokenizer as data, for the deployment formats: the C runtime's tables and tokenizer.json.

- `tokenizer_tables`: the pieces, their sorted index and the normalisation table generated from
  `data.normalize_text` (`normalizer_table`), checked for what the C tokenizer implements (BPE, identity
  normaliser, merge scores falling with piece id); `export_c` writes them as C arrays.
- `hf_tokenizer`: the same tokenizer for Hugging Face `tokenizers` (tokenizer.json, written by export_c,
  export_onnx and export_tflite), self-contained: the normalisation table compiled into a `Precompiled`
  charsmap by sentencepiece itself (`precompiled_charsmap`). Needs the `export` extra.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from embbert_jax import configs
from embbert_jax.artifacts import ExportError

BOUNDARY = "\u2581"
# Code points that can map to anything else: planes 4-13 are unassigned and planes 15-16 private use (both
# map to themselves; a test checks it for the running Python's unicodedata).
_ASSIGNED_RANGE = [*range(0x40000), *range(0xE0000, 0xF0000)]


def _spm_pieces(tokenizer_path: Path):
  from sentencepiece import sentencepiece_model_pb2 as pb
  m = pb.ModelProto()
  m.ParseFromString(Path(tokenizer_path).read_bytes())
  return m


@functools.lru_cache(maxsize=4)
def normalizer_table(known: frozenset) -> tuple[tuple[tuple[int, str], ...], tuple[tuple[int, int], ...]]:
  """(mappings (code point, image), deleted ranges (lo, hi)) of data.normalize_text, per code point.

  The image f(c) = drop_Mn(NFKD(c.lower())) with Python whitespace as ' '. Kept: c with f(c) != c that is
  deleted, or whose image holds a known character or a space, or that is itself known; any other c gives
  the same ids as its image (a run of unknown characters is one [UNK]), so the table leaves it out.
  """
  maps, deleted = [], []
  for cp in _ASSIGNED_RANGE:
    if 0xD800 <= cp <= 0xDFFF:
      continue
    ch = chr(cp)
    img = ch.lower()
    if not img.isascii():
      img = "".join(x for x in unicodedata.normalize("NFKD", img) if unicodedata.category(x) != "Mn")
    img = "".join(" " if x.isspace() else x for x in img)
    if img == ch:
      continue
    if img == "":
      if deleted and deleted[-1][1] == cp - 1:
        deleted[-1][1] = cp
      else:
        deleted.append([cp, cp])
    elif ch in known or any(x == " " or x in known for x in img):
      maps.append((cp, img))
  return tuple(maps), tuple(tuple(r) for r in deleted)


def tokenizer_tables(tokenizer_path: Path) -> dict[str, Any]:
  """The arrays of embbert_tokenizer_data.c, checked against the assumptions of the C BPE."""
  m = _spm_pieces(tokenizer_path)
  pieces = [p.piece for p in m.pieces]
  normal = [i for i, p in enumerate(m.pieces) if p.type == 1]
  if m.trainer_spec.model_type != 2:  # BPE
    raise ExportError(f"{tokenizer_path}: the C tokenizer implements sentencepiece BPE models only")
  if m.normalizer_spec.name != "identity":
    raise ExportError(f"{tokenizer_path}: normaliser {m.normalizer_spec.name!r}; the project's models use "
                      "'identity' (normalisation is data.normalize_text)")
  multi = [(i, m.pieces[i].score) for i in normal if len(pieces[i]) > 1]
  if any(a[1] <= b[1] for a, b in zip(multi, multi[1:])):
    raise ExportError(f"{tokenizer_path}: merge scores do not fall strictly with piece id")
  if any(BOUNDARY in pieces[i][1:] for i in normal):
    raise ExportError(f"{tokenizer_path}: a piece holds U+2581 after its first character")
  known = {pieces[i] for i in normal if len(pieces[i]) == 1}
  if BOUNDARY not in known or any(ch not in known for i in normal for ch in pieces[i]):
    raise ExportError(f"{tokenizer_path}: a piece uses a character that is not itself a piece")
  if known & {"\u03c3", "\u03c2"}:
    raise ExportError(f"{tokenizer_path}: a sigma is a piece; Python's final-sigma lowercasing needs context")
  spelled = [p.replace(BOUNDARY, " ").encode("utf-8") for p in pieces]
  offsets = np.cumsum([0] + [len(s) for s in spelled])
  order = sorted(normal, key=lambda i: spelled[i])
  maps, deleted = normalizer_table(frozenset(known))
  map_bytes = [img.encode("utf-8") for _, img in maps]
  return {"pieces": len(pieces), "bytes": b"".join(spelled), "offsets": offsets, "sorted": order,
          "norm_cp": [cp for cp, _ in maps], "norm_bytes": b"".join(map_bytes),
          "norm_offsets": np.cumsum([0] + [len(b) for b in map_bytes]), "deleted": deleted,
          "known_chars": "".join(sorted(known))}


# ----------------------------------------------------------------------------------- tokenizer.json


def precompiled_charsmap(tokenizer_path: Path) -> bytes:
  """The normalisation table compiled by sentencepiece itself (normalization_rule_tsv), so that Hugging
  Face's `Precompiled` normaliser applies the same per-character map as the C runtime."""
  import tempfile
  import sentencepiece as spm
  t = tokenizer_tables(Path(tokenizer_path))
  rows = [(cp, t["norm_bytes"][t["norm_offsets"][i]:t["norm_offsets"][i + 1]].decode("utf-8"))
          for i, cp in enumerate(t["norm_cp"])]
  rows += [(cp, "") for lo, hi in t["deleted"] for cp in range(lo, hi + 1)]
  tsv = "".join(f"{cp:X}\t{' '.join(f'{ord(ch):X}' for ch in img)}\n" for cp, img in sorted(rows))
  with tempfile.TemporaryDirectory() as tmp:
    Path(tmp, "rules.tsv").write_text(tsv)
    Path(tmp, "corpus.txt").write_text("abc\n" * 10)
    spm.SentencePieceTrainer.train(input=f"{tmp}/corpus.txt", model_prefix=f"{tmp}/m", model_type="char",
                                   vocab_size=8, normalization_rule_tsv=f"{tmp}/rules.tsv", minloglevel=2)
    return _spm_pieces(Path(tmp, "m.model")).normalizer_spec.precompiled_charsmap


def hf_tokenizer(tokenizer_path: str | Path, max_len: int, add_cls: bool = True):
  """A Hugging Face `tokenizers.Tokenizer` giving Tokenizer.encode_batch's ids (unpadded): the normaliser
  table as `Precompiled`, whitespace collapse, Metaspace, BPE whose merges are every split of every piece
  ranked by the piece's id (sentencepiece's priority), [UNK] runs fused, the [CLS]/[SEP] templates and
  longest-first truncation to max_len. Needs the `tokenizers` package (the `export` extra)."""
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  m = _spm_pieces(Path(tokenizer_path))
  pieces = [p.piece for p in m.pieces]
  normal = [i for i, p in enumerate(m.pieces) if p.type == 1]
  vocab = {p: i for i, p in enumerate(pieces)}
  normal_set = {pieces[i] for i in normal}
  merges = [(p[:k], p[k:]) for i in normal for p in [pieces[i]] if len(p) > 1
            for k in range(1, len(p)) if p[:k] in normal_set and p[k:] in normal_set]
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]", fuse_unk=True, byte_fallback=False))
  tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(Path(tokenizer_path))),
                                         normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()])
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=BOUNDARY, prepend_scheme="always", split=True)
  tok.decoder = decoders.Metaspace(replacement=BOUNDARY, prepend_scheme="always", split=True)
  cls, sep = ("[CLS]", configs.CLS_ID), ("[SEP]", configs.SEP_ID)
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A" if add_cls else "$A",
      pair=("[CLS] " if add_cls else "") + "$A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep])
  tok.enable_truncation(max_len, strategy="longest_first")
  return tok
