"""Dataset-hub tasks (``glue/sst2``, ``ag_news``, ``hub:owner/name``), read with ``datasets.load_dataset``.

These machines cannot reach the hub, so the column mapping and split logic is the pure function
``task_from_dataset_dict``, which tests feed a locally built ``DatasetDict``. Validation is always 10 % of
train held out, stratified by label (GLUE test labels are hidden, so GLUE's validation split serves as the
test split).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from embbert_jax.data.fetch import DataError, _say
from embbert_jax.data.splits import Split, TaskData, encode_labels, stratified_split


@dataclasses.dataclass(frozen=True)
class HubTask:
  """How to read one dataset-hub task: columns, label count, the selection metric and which hub split is
  our test."""

  path: str
  config: str | None
  text: str
  pair: str | None
  label: str = "label"
  num_labels: int | None = None  # None: from the ClassLabel feature or the labels themselves
  metric: str = "mcc"  # model selection (spec: MCC, Spearman for regression)
  test_split: str | None = "test"  # None: "test" if labelled, else "validation"
  is_regression: bool = False
  pair_optional: bool = False  # unlisted datasets: use the pair column only if the dataset has it


def _glue(config: str, text: str, pair: str | None, num_labels: int, **kw: Any) -> HubTask:
  # GLUE test labels are hidden (-1): its validation split is our test, validation comes out of train.
  return HubTask("nyu-mll/glue", config, text, pair, "label", num_labels, test_split="validation", **kw)


HUB_TASKS: Mapping[str, HubTask] = types.MappingProxyType({
    "glue/cola": _glue("cola", "sentence", None, 2),
    "glue/sst2": _glue("sst2", "sentence", None, 2),
    "glue/mrpc": _glue("mrpc", "sentence1", "sentence2", 2),
    "glue/qqp": _glue("qqp", "question1", "question2", 2),
    "glue/stsb": _glue("stsb", "sentence1", "sentence2", 1, metric="spearman", is_regression=True),
    "glue/mnli": HubTask("nyu-mll/glue", "mnli", "premise", "hypothesis", "label", 3,
                         test_split="validation_matched"),
    "glue/qnli": _glue("qnli", "question", "sentence", 2),
    "glue/rte": _glue("rte", "sentence1", "sentence2", 2),
    "glue/wnli": _glue("wnli", "sentence1", "sentence2", 2),
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
  for needed in ("train", test_name):
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
            "test": splits["test"]}
  num_labels = 1 if spec.is_regression else (spec.num_labels or len(names))
  return TaskData(name, splits, num_labels, tuple(names), spec.metric, spec.is_regression)


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
