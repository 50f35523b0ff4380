"""The data and the clock of a standalone MLM + NSP pre-training (loop.pretrain runs it).

* `split_pairs`: NSP pairs from the corpus, with a FIXED held-out slice: whole documents chosen by a
  constant seed (the same for every run seed, max_pairs and model), so no held-out sentence is in a
  training pair and the held-out curve of one run compares with another's. The training pairs are a
  seeded subsample of at most `max_pairs`, tokenized up front (measured on the 49 MB corpus: all its
  787k training pairs are 385 MiB of ids at length 128 and a 2.8 GB peak while tokenizing; 300k pairs
  148 MiB and 1.3 GB).
* `save_encoder`: the model folder (encoder + heads) and its manifest, written at every checkpoint
  (`stopped_by: "in progress"`) and at the end, so a run killed or still running leaves a usable encoder.
* `Clock`: wall time over resumes and the step at which the next chunk of training ends, so that a run
  stops at its time budget (each chunk ends at an evaluation and a checkpoint).
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from embbert_jax import batches as batch_lib
from embbert_jax import files

HELDOUT_SEED = 20_240_917  # fixed: the held-out documents do not depend on the run's seed


PAIRS_PER_DOC = 4  # consecutive pairs a held-out document gives (its first 5 sentences): many documents


def split_documents(docs: list[list[str]], eval_pairs: int) -> tuple[list[list[str]], list[list[str]]]:
  """(training documents, held-out documents cut to their first PAIRS_PER_DOC + 1 sentences): whole
  documents, in a fixed order, until the held-out ones give `eval_pairs` NSP pairs (each consecutive pair
  also gives one "not next" pair). The rest of a held-out document is not used at all."""
  order = np.random.default_rng(HELDOUT_SEED).permutation(len(docs))
  need, got, held = math.ceil(eval_pairs / 2), 0, []
  for i in order:
    if got >= need:
      break
    if len(docs[i]) >= 2:
      held.append(int(i))
      got += min(len(docs[i]) - 1, PAIRS_PER_DOC)
  if got < need or len(held) * 2 > len(docs):
    raise ValueError(f"the corpus ({len(docs)} documents) is too small to hold out {eval_pairs} pairs; "
                     f"lower pretrain.eval_pairs")
  held_set = set(held)
  return ([d for j, d in enumerate(docs) if j not in held_set],
          [docs[i][:PAIRS_PER_DOC + 1] for i in sorted(held)])


def split_pairs(docs: list[list[str]], tok, seq_len: int, seed: int, eval_pairs: int,
                max_pairs: int = 0) -> tuple[batch_lib.Arrays, batch_lib.Arrays, dict]:
  """(training arrays, held-out arrays, what was used): see the module docstring."""
  train_docs, held_docs = split_documents(docs, eval_pairs)
  seen = {s for d in train_docs for s in d}
  h_first, h_second, h_labels = batch_lib.nsp_pairs(held_docs, HELDOUT_SEED)
  pick = np.random.default_rng(HELDOUT_SEED).permutation(len(h_labels))
  # A sentence repeated in a training document would leak: such pairs are dropped (the corpus is deduplicated).
  pick = [int(i) for i in pick if h_first[i] not in seen and h_second[i] not in seen][:eval_pairs]
  pick.sort()
  first, second, labels = batch_lib.nsp_pairs(train_docs, seed)
  keep = np.arange(len(labels))
  if max_pairs and len(labels) > max_pairs:
    keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:max_pairs])
  train = batch_lib.Arrays(tok.encode_batch([first[i] for i in keep], [second[i] for i in keep], max_len=seq_len),
                           labels[keep])
  held = batch_lib.Arrays(tok.encode_batch([h_first[i] for i in pick], [h_second[i] for i in pick],
                                           max_len=seq_len), h_labels[pick])
  info = {"documents": {"train": len(train_docs), "held_out": len(held_docs)},
          "pairs": {"train_available": int(len(labels)), "train_used": int(len(keep)), "held_out": len(pick),
                    "max_pairs": int(max_pairs)},
          "ids_mb": round((train.ids.nbytes + held.ids.nbytes) / 2**20, 1), "held_out_seed": HELDOUT_SEED}
  return train, held, info


def fmt_duration(s: float) -> str:
  s = max(0, int(round(s)))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Clock:
  """Training wall time (data preparation excluded) summed over resumes, and where the next chunk ends.

  `elapsed_before`: the wall time the runs before this one recorded (progress rows of metrics.jsonl)."""

  def __init__(self, budget_s: float | None, elapsed_before: float = 0.0, first_chunk: int = 50):
    self.budget, self.before, self.first_chunk = budget_s, elapsed_before, first_chunk
    self.t0, self.sec_per_step, self._chunks = time.perf_counter(), None, []

  @property
  def elapsed(self) -> float:
    return self.before + time.perf_counter() - self.t0

  def chunk_end(self, done: int, total: int, eval_every: int) -> int:
    """The step the next chunk trains to: the next evaluation, or what the budget still holds (`done`
    when it holds nothing: stop). The first chunk of a budgeted run is short, to measure the rate."""
    end = min(total, (done // eval_every + 1) * eval_every)
    if self.budget is None:
      return end
    left = self.budget - self.elapsed
    if left <= 0:
      return done
    if self.sec_per_step is None:
      return min(end, done + self.first_chunk)
    fits = int(left // self.sec_per_step)
    # A sliver of a chunk would cost an evaluation and a checkpoint for a few steps: stop instead.
    return min(end, done + fits) if fits >= max(1, eval_every // 20) else done

  def record(self, steps: int, seconds: float) -> None:
    """A chunk of `steps` took `seconds` (restore, evaluation and checkpoint included: conservative). The
    rate is over this process's chunks after the first (which compiles), or the first while it is alone."""
    if steps > 0:
      self._chunks.append((steps, seconds))
      later = self._chunks[1:] or self._chunks
      self.sec_per_step = sum(t for _, t in later) / sum(n for n, _ in later)

  def progress(self, done: int, total: int, validation: dict) -> tuple[str, float]:
    """(one progress line, ETA in seconds to the last step)."""
    rate = 1 / self.sec_per_step if self.sec_per_step else float("nan")
    eta = (total - done) * (self.sec_per_step or 0.0)
    line = (f"step {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%), {rate:.2f} steps/s, "
            f"{fmt_duration(self.elapsed)} elapsed, ETA {fmt_duration(eta)}")
    if self.budget is not None and eta > self.budget - self.elapsed:
      left = max(self.budget - self.elapsed, 0.0)
      line += (f" (the time budget ends in {fmt_duration(left)}, near step "
               f"{done + int(left * rate) if rate == rate else done:,})")
    if validation:
      line += (f"; held-out MLM loss {validation['mlm_loss']:.4f} (perplexity {validation['mlm_perplexity']:.1f}), "
               f"MLM accuracy {validation['mlm_accuracy']:.3f}, NSP accuracy {validation['nsp_accuracy']:.3f}")
    return line, eta


def elapsed_before(metrics_path: Path, step: int) -> float:
  """The training wall time a resumed run's predecessors recorded up to `step` (its checkpoint)."""
  if step <= 0 or not metrics_path.exists():
    return 0.0
  rows = [r for r in files.read_jsonl(metrics_path) if r["step"] <= step and "progress/wall_s" in r]
  return float(rows[-1]["progress/wall_s"]) if rows else 0.0


def save_encoder(folder: Path, params, cfg, tokenizer_path, corpus: Path, corpus_sha256: str, *, steps: int,
                 stopped_by: str, wall_s: float, validation: dict, data_info: dict,
                 command: str | None = None) -> None:
  """params + config + tokenizer (artifacts.save_model) and manifest.json: the exact command, model config,
  corpus name and sha256, seed, steps done and planned, why it stopped ("in progress" for a checkpoint's
  snapshot), training wall time, the held-out metrics at `steps`, the pairs used and the recipe.
  `corpus_sha256` is the caller's, hashed once per run (it is written at every checkpoint)."""
  from embbert_jax.programs import save_params
  pc = cfg.pretrain
  save_params(folder, params, cfg.model, tokenizer_path)
  recipe = {**pc.to_dict(), "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip}
  manifest = {"command": command or shlex.join(["python", *sys.argv]), "preset": cfg.preset,
              "model": cfg.model.to_dict(), "corpus": corpus.name, "corpus_sha256": corpus_sha256,
              "seed": cfg.seed, "steps": steps, "target_steps": pc.steps, "stopped_by": stopped_by,
              "wall_s": wall_s, "final": validation, "data": data_info, "recipe": recipe}
  files.write_json_atomic(Path(folder) / "manifest.json", manifest)
