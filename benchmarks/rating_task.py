"""A multi-class task from the vaderSentiment snippets' mean ratings, as a local .jsonl with a split column.

    python benchmarks/rating_task.py --sets amazon nyt --cuts -0.5 0.5 --out runs/w/rating3.jsonl
    python -m embbert_jax.sweep --budget 2MB --task runs/w/rating3.jsonl --time-budget 20m

The registered tasks (rt_polarity, tweets, amazon, nyt) are binary: label = mean rating > 0. The same
files give a harder task of another kind: the ratings (-4..4) cut into len(cuts) + 1 ordered classes
(default: negative <= -0.5 < neutral <= 0.5 < positive: a rating on a cut goes below it, as the
binary tasks count 0 as negative), over one or more snippet sets pooled, shuffled with
`--seed` and given a "split" column 80/10/10 (train/validation/test). It exercises what a user's own
file goes through (a local file, string labels, more than two classes) on real text.

`--label source` labels each snippet with the set it came from instead (movie review, tweet, product
review, editorial): a topic-and-register task, the kind where a linear model on words is strong, with
the sets' sizes as its class balance (all four: 23,703 rows, majority 44.7 %).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from embbert_jax import files
from embbert_jax.data import tasks

MEMBERS = {"rt_polarity": "movieReviewSnippets_GroundTruth.txt", "tweets": "tweets_GroundTruth.txt",
           "amazon": "amazonReviewSnippets_GroundTruth.txt", "nyt": "nytEditorialSnippets_GroundTruth.txt"}


def class_names(n: int) -> list[str]:
  return {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}.get(n, [f"c{i}" for i in range(n)])


def rows_of(sets: list[str], cuts: list[float], seed: int, cache_dir: str | None = None,
            label: str = "rating", max_rows: int | None = None) -> list[dict]:
  archive = tasks.ensure_archive(tasks.REGISTRY["rt_polarity"].source, cache_dir)
  names = class_names(len(cuts) + 1)
  rows = []
  for name in sets:
    texts, ratings = tasks._read_vader_snippets(archive, MEMBERS[name])
    if label == "source":
      rows += [{"text": t, "label": name} for t in texts]
      continue
    classes = np.searchsorted(np.asarray(sorted(cuts)), ratings, side="left")  # a rating on a cut goes below it
    rows += [{"text": t, "label": names[c]} for t, c in zip(texts, classes)]
  random.Random(seed).shuffle(rows)
  rows = rows[:max_rows] if max_rows else rows
  n = len(rows)
  for i, row in enumerate(rows):
    row["split"] = "train" if i < 0.8 * n else "validation" if i < 0.9 * n else "test"
  return rows


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sets", nargs="+", choices=sorted(MEMBERS), default=["amazon", "nyt"])
  ap.add_argument("--cuts", nargs="+", type=float, default=[-0.5, 0.5])
  ap.add_argument("--label", choices=["rating", "source"], default="rating",
                  help="rating: the mean rating cut at --cuts; source: which snippet set a text comes from")
  ap.add_argument("--max-rows", type=int, default=None, help="keep this many of the shuffled rows (a smaller task)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", type=Path, required=True)
  args = ap.parse_args(argv)
  rows = rows_of(args.sets, args.cuts, args.seed, label=args.label, max_rows=args.max_rows)
  files.write_text_atomic(args.out, "".join(json.dumps(r) + "\n" for r in rows))
  counts = Counter(r["label"] for r in rows)
  print(f"wrote {args.out}: {len(rows)} rows, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
  sys.exit(main())
