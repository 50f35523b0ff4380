"""What a task is (Split, TaskData), how its labels are encoded and how it is split: deterministic,
stratified, by a hash of each example, so splits do not depend on the NumPy version or the row order."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from embbert_jax.data.fetch import DataError


SPLITS = ("train", "validation", "test")
EVAL_SPLITS = SPLITS[1:]  # the held-out splits a run is evaluated and reported on


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
  """A labelled task with train/validation/test splits."""

  name: str
  splits: dict[str, Split]
  num_labels: int  # 1 for regression
  label_names: tuple[str, ...]
  metric: str  # model-selection metric: "mcc" or "spearman"
  is_regression: bool = False

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


def resplit(splits: Mapping[str, Split], seed: int) -> dict[str, Split]:
  """Split `seed` of a task whose splits were given (a file's split column): the three pooled and split
  again (stratified_split, seeded) into the same validation and test fractions; seed 0 keeps the given
  splits. Replicate splits of a fixed split, so a result can be checked on test sets other than the one
  it was chosen on (python -m embbert_jax.replicate)."""
  if seed == 0:
    return dict(splits)
  parts = [splits[s] for s in SPLITS]
  pairs = None if parts[0].text_pair is None else [x for p in parts for x in p.text_pair]
  full = Split([x for p in parts for x in p.text], pairs, np.concatenate([p.label for p in parts]))
  fractions = {s: len(splits[s]) / len(full) for s in EVAL_SPLITS}
  idx = stratified_split(full.label, full.text, full.text_pair, seed=seed, fractions=fractions)
  return {s: full.subset(idx[s]) for s in SPLITS}


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
