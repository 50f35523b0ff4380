"""Pre-trained token vectors: the pre-training that pays on a CPU (`--init embeddings`, the default).

The vectors are a truncated SVD of the positive pointwise mutual information (PPMI) matrix of piece
co-occurrences in the pre-training corpus, over the tokenizer's pieces (Levy, Goldberg and Dagan 2015,
"Improving distributional similarity with lessons learned from word embeddings"): pairs of pieces at most
RECIPE["window"] apart in one sentence, each counted 1/distance, context counts smoothed by
RECIPE["alpha"] = 0.75, negative PMI clipped to 0, the top RECIPE["dims"] singular vectors. About 20 s
for the default corpus (15 M pieces) on 2 CPU cores, where two hours of MLM pre-training of the headline
did not beat random init (README, Pre-training). The README's "Pre-trained token vectors" has the
measurements behind the recipe (window 2 over 1, 5 and 10; per-column scaling over keeping the singular
values) and what they buy.

A table holds its columns in order of singular value, so a model whose token table is w wide takes the
first min(w, dims) columns: every embed_dim of a search space shares one table (the nested property of
the supernet's elastic axes). `token_table` writes them into a randomly initialised table: the rows of
pieces seen in the corpus get the leading columns, each column scaled to unit standard deviation over
those rows (the N(0, 1) scale of models.table_init); special pieces, pieces the corpus never pairs and
columns past `dims` keep their random values. The rest of the model stays random: the from-scratch
recipe trains it (recipes.choose).

Where a table comes from (`find`): for the package's tokenizers (embbert_jax/tokenizers) the package
ships them (embbert_jax/wordvecs/ppmi<V>.npz, float16, index.json with each file's sha256, the tokenizer
sha256, the corpus, the recipe and the command: `python -m embbert_jax.ship vectors`); any other
(tokenizer, corpus) pair is built on first use and cached under <cache>/wordvecs/.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from embbert_jax.files import sha256_file, verified_file, write_json_atomic

RECIPE = {"version": 2, "window": 2, "alpha": 0.75, "dims": 64}
SHIPPED = Path(__file__).resolve().parent / "wordvecs"
SHIPPED_INDEX = "index.json"
FORMAT = "embbert_jax.wordvecs/1"
NUM_SPECIAL = 5  # [PAD] [UNK] [CLS] [SEP] [MASK]: ids 0..4 (tokenizer.SPECIAL_IDS), never in the corpus


class VectorsError(ValueError):
  """Token vectors that cannot be built or used; the message is one line."""


# ------------------------------------------------------------------------------------------- building


def cooccurrence(sentences: list[list[int]], vocab_size: int, window: int):
  """Symmetric (V, V) scipy CSR matrix: sum over pairs of pieces 1..window apart in one sentence of
  1/distance."""
  import scipy.sparse as sp
  lens = np.fromiter((len(s) for s in sentences), np.int64, len(sentences))
  flat = np.fromiter((i for s in sentences for i in s), np.int64, int(lens.sum()))
  sentence = np.repeat(np.arange(len(sentences)), lens)
  counts = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
  for d in range(1, window + 1):
    same = sentence[d:] == sentence[:-d]
    a, b = flat[:-d][same], flat[d:][same]
    m = sp.coo_matrix((np.full(a.size, 1.0 / d), (a, b)), shape=(vocab_size, vocab_size)).tocsr()
    counts = counts + m + m.T
  return counts


def ppmi(counts, alpha: float):
  """max(0, log p(a, b) / (p(a) p_alpha(b))) on the nonzero counts, p_alpha the context distribution
  raised to alpha and renormalised (CSR in, CSR out)."""
  import scipy.sparse as sp
  c = counts.tocoo()
  total = c.data.sum()
  rows = np.asarray(counts.sum(1)).ravel() / total
  ctx = np.asarray(counts.sum(0)).ravel() ** alpha
  ctx = ctx / ctx.sum()
  pmi = np.log(c.data / total) - np.log(rows[c.row]) - np.log(ctx[c.col])
  keep = pmi > 0
  return sp.csr_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=counts.shape)


def svd_vectors(matrix, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(vectors (V, dims) float32, singular values (dims,), seen (V,) bool): the top `dims` left singular
  vectors of `matrix`, largest first, each column scaled to unit std over the rows that have an entry
  (`seen`); unseen rows are 0. A fixed start vector makes it deterministic."""
  import scipy.sparse.linalg as sla
  seen = np.diff(matrix.indptr) > 0
  k = min(dims, int(seen.sum()) - 1)
  if k < 1:
    raise VectorsError("the corpus pairs fewer than two pieces: no vectors to build")
  start = np.ones(min(matrix.shape), np.float64) / np.sqrt(min(matrix.shape))
  u, s, _ = sla.svds(matrix.astype(np.float64), k=k, v0=start)
  order = np.argsort(-s)
  u, s = u[:, order], s[order]
  u = u * np.sign(u[seen].sum(0, keepdims=True) + 1e-30)  # a fixed sign per column
  u[seen] /= u[seen].std(0, keepdims=True)
  u[~seen] = 0.0
  return u.astype(np.float32), s.astype(np.float32), seen


def build(tokenizer, corpus: str | os.PathLike, recipe: dict | None = None) -> dict:
  """The vectors of `tokenizer`'s pieces in the corpus file (one sentence per line): a dict of
  "vectors", "singular", "seen" and "info" (pieces counted, seconds)."""
  import scipy.sparse as sp
  recipe = {**RECIPE, **(recipe or {})}
  t0 = time.perf_counter()
  with open(corpus, encoding="utf-8") as f:
    lines = [line for line in (raw.strip() for raw in f) if line]
  sentences = tokenizer.tokenize(lines)
  counts = cooccurrence(sentences, tokenizer.vocab_size, int(recipe["window"]))
  matrix = ppmi(counts, float(recipe["alpha"]))
  ordinary = np.ones(tokenizer.vocab_size)
  ordinary[:NUM_SPECIAL] = 0.0  # [UNK] does occur (pieces the tokenizer cannot spell): it keeps its random row
  keep = sp.diags(ordinary)
  matrix = (keep @ matrix @ keep).tocsr()
  matrix.eliminate_zeros()
  vectors, singular, seen = svd_vectors(matrix, int(recipe["dims"]))
  info = {"pieces": int(sum(len(s) for s in sentences)), "sentences": len(sentences),
          "seen_pieces": int(seen.sum()), "seconds": round(time.perf_counter() - t0, 1)}
  return {"vectors": vectors, "singular": singular, "seen": seen, "info": info}


def save(path: Path, built: dict, meta: dict) -> None:
  """vectors as float16 (unit-std columns: well inside its range), seen, singular values, and the meta
  (recipe, tokenizer and corpus identity) as a JSON string, written atomically."""
  from embbert_jax import artifacts
  artifacts.write_npz(path, {"vectors": built["vectors"].astype(np.float16), "seen": built["seen"],
                             "singular": built["singular"],
                             "meta": np.array(json.dumps({**meta, **built["info"]}, sort_keys=True))})


def load(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
  """(vectors float32 (V, dims), seen bool (V,), meta) of a saved table; VectorsError naming the file."""
  try:
    with np.load(path) as z:
      return z["vectors"].astype(np.float32), z["seen"].astype(bool), json.loads(str(z["meta"]))
  except (OSError, KeyError, ValueError) as e:
    raise VectorsError(f"{path}: not a token-vector table ({e}); delete it to rebuild it") from None


# ------------------------------------------------------------------------------------------- finding


def shipped_index() -> dict:
  f = SHIPPED / SHIPPED_INDEX
  return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


def _shipped(tokenizer_sha: str) -> Path | None:
  """The shipped table made for this tokenizer file with this code's recipe, sha256-checked."""
  index = shipped_index()
  if index.get("recipe") != RECIPE:
    return None
  entry = next((e for e in index.get("tables", {}).values() if e["tokenizer_sha256"] == tokenizer_sha), None)
  if entry is None:
    return None
  return verified_file(SHIPPED / entry["file"], entry["sha256"], "index", VectorsError)


def cache_path(tokenizer_sha: str, corpus_sha: str, vocab_size: int, cache_dir=None) -> Path:
  from embbert_jax.data import resolve_cache_dir
  key = f"{tokenizer_sha[:12]}-{corpus_sha[:12]}-w{RECIPE['window']}-k{RECIPE['dims']}-v{RECIPE['version']}"
  return resolve_cache_dir(cache_dir) / "wordvecs" / f"ppmi{vocab_size}-{key}.npz"


def find(vocab_size: int, corpus: str = "", cache_dir: str | None = None) -> Path:
  """The table of the run's tokenizer (tokenizer.get_tokenizer(vocab_size, corpus)): shipped, cached,
  or built from the corpus now (and cached)."""
  from embbert_jax import data
  from embbert_jax import tokenizer as tok_lib
  tok = tok_lib.get_tokenizer(vocab_size, corpus or None, cache_dir)
  tok_sha = sha256_file(tok.model_path)
  shipped = _shipped(tok_sha)
  if shipped is not None:
    return shipped
  corpus_path = Path(corpus) if corpus else data.pretraining_corpus(cache_dir)
  corpus_sha = sha256_file(corpus_path)
  out = cache_path(tok_sha, corpus_sha, vocab_size, cache_dir)
  if out.is_file():
    return out
  print(f"[embbert_jax.wordvecs] building {vocab_size}-piece token vectors from {corpus_path} into {out}",
        file=sys.stderr, flush=True)
  built = build(tok, corpus_path)
  save(out, built, {"format": FORMAT, "recipe": RECIPE, "tokenizer_sha256": tok_sha, "pieces_in_vocab": vocab_size,
                    "corpus": corpus_path.name, "corpus_sha256": corpus_sha})
  print(f"[embbert_jax.wordvecs] built in {built['info']['seconds']:.0f} s", file=sys.stderr, flush=True)
  return out


# ------------------------------------------------------------------------------------------- using


def token_table(table: np.ndarray, vectors: np.ndarray, seen: np.ndarray) -> np.ndarray:
  """`table` (V, w) (random init) with its seen rows' first min(w, dims) columns replaced by the vectors'."""
  if table.shape[0] != vectors.shape[0]:
    raise VectorsError(f"token vectors for {vectors.shape[0]} pieces, the model's table has {table.shape[0]}")
  w = min(table.shape[1], vectors.shape[1])
  out = np.array(table, copy=True)
  out[seen, :w] = vectors[seen, :w].astype(out.dtype)
  return out


def apply(params, path: str | os.PathLike, members: list[bool] | None = None):
  """Stacked params (leading axis G) with the token table of each member i (members[i], default all)
  replaced by token_table; params without a token table (none of the presets) are returned as is."""
  vectors, seen, _ = load(path)
  emb = params.get("encoder", {}).get("embedder", {}).get("token")
  if emb is None:
    return params
  stack = np.array(emb["embedding"])
  for i in range(stack.shape[0]):
    if members is None or members[i]:
      stack[i] = token_table(stack[i], vectors, seen)
  emb["embedding"] = stack
  return params


def ship(vocabs, cache_dir: str | None = None, dest: str | os.PathLike | None = None, command: str = "") -> dict:
  """Maintainers: build (or take from the cache) the tables of the package's tokenizers and copy them
  into `dest` (default: embbert_jax/wordvecs/) with index.json; other ppmi*.npz there are removed."""
  from embbert_jax import tokenizer as tok_lib
  from embbert_jax.files import write_bytes_atomic
  out = Path(dest) if dest is not None else SHIPPED
  out.mkdir(parents=True, exist_ok=True)
  tables = {}
  for v in sorted(set(int(v) for v in vocabs)):
    if tok_lib.shipped_tokenizer(v) is None:
      raise VectorsError(f"no shipped {v}-piece tokenizer: ship it first (python -m embbert_jax.ship tokenizers)")
    tok_sha = sha256_file(tok_lib.shipped_tokenizer(v))
    source = find(v, "", cache_dir)  # the shipped table while its recipe is this code's, else built
    name = f"ppmi{v}.npz"
    if Path(source).resolve() != (out / name).resolve():
      write_bytes_atomic(out / name, Path(source).read_bytes())
    _, seen, meta = load(out / name)
    tables[str(v)] = {"file": name, "sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size,
                      "tokenizer_sha256": tok_sha, "seen_pieces": int(seen.sum()),
                      "corpus": meta.get("corpus"), "corpus_sha256": meta.get("corpus_sha256"),
                      "pieces": meta.get("pieces"), "seconds": meta.get("seconds")}
  for stale in out.glob("ppmi*.npz"):
    if stale.name not in {t["file"] for t in tables.values()}:
      stale.unlink()
  index = {"format": FORMAT, "recipe": RECIPE, "made_by": command, "tables": tables}
  write_json_atomic(out / SHIPPED_INDEX, index, indent=1)
  return index

