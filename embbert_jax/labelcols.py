"""Label columns: the token table's last columns from a linear model of the training split's pieces.

A linear model on the bag of the run's own pieces (TF-IDF weights, L2-regularised logistic regression)
is as strong as the word n-gram one every search here is measured against, or stronger, and it learns
one weight per piece and class from the training split alone. A network from token vectors has to learn the same per-piece evidence
through a table whose rows start at corpus co-occurrence vectors that say little about the labels
(logistic regression on the mean token vector of a text: 62 % on amazon at r = 16, against 76 % on the
pieces themselves; README, "Label columns"). So the init writes the linear model's weights into the
table: k = 1 column for two classes (the weight vector of the positive logit) and for regression (ridge
weights), k = C columns for C > 2 classes (the softmax weights), each scaled to unit standard deviation
over the pieces the training split has (the N(0, 1) scale of the table; pieces it lacks get 0), in the
table's last k columns, where the token vectors' least informative columns were (their columns come in
order of singular value). The model then trains as before; no parameter is added, so memory and the
C export are unchanged.

The linear model is sklearn's defaults written out (raw counts, smoothed idf ln((1 + n) / (1 + df)) + 1,
rows L2-normalised; loss summed over examples plus ||W||^2 / 2, the intercepts unpenalised) and solved
with scipy's L-BFGS-B, which jax already needs, so the core install needs no scikit-learn; a test checks
the weights against scikit-learn's LogisticRegression where it is installed.
"""

from __future__ import annotations

import numpy as np

NUM_SPECIAL = 5  # [PAD] [UNK] [CLS] [SEP] [MASK] (tokenizer.SPECIAL_IDS): not features


def tfidf(ids_NxL: np.ndarray, vocab_size: int, idf: np.ndarray | None = None):
  """(N, V) scipy CSR: per text the counts of its non-special pieces times their smoothed idf, each row
  L2-normalised (sklearn's TfidfTransformer defaults); the (V,) mask of pieces present; the (V,) idf,
  these texts' own unless `idf` (a training split's) is given."""
  import scipy.sparse as sp
  ids = np.asarray(ids_NxL)
  rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
  cols = ids.reshape(-1).astype(np.int64)
  keep = cols >= NUM_SPECIAL
  counts = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(ids.shape[0], vocab_size))
  counts.sum_duplicates()
  df = np.bincount(counts.indices, minlength=vocab_size)
  if idf is None:
    idf = np.log((1.0 + ids.shape[0]) / (1.0 + df)) + 1.0
  x = counts.multiply(idf[None, :]).tocsr()
  norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
  x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
  return x.tocsr(), df > 0, idf


def fit_linear(x, labels: np.ndarray, num_labels: int, is_regression: bool = False, l2: float = 1.0,
               max_iter: int = 500) -> np.ndarray:
  """Weights (V, k) of the linear model minimising sum of losses + l2 * ||W||^2 / 2 (intercepts free):
  logistic (k = 1) for two classes, softmax (k = C) for more, squared error (k = 1) for regression."""
  from scipy.optimize import minimize
  n, v = x.shape
  y = np.asarray(labels)
  k = 1 if (is_regression or num_labels == 2) else num_labels
  xt = x.T.tocsr()
  onehot = None if k == 1 else np.eye(k)[y.astype(np.int64)]

  def objective(theta):
    w, b = theta[:v * k].reshape(v, k), theta[v * k:]
    z = np.asarray(x @ w) + b
    if is_regression:
      r = z[:, 0] - y
      loss, dz = 0.5 * float(r @ r), r[:, None]
    elif k == 1:
      s = 2.0 * y - 1.0  # labels 0/1 -> -1/+1
      m = s * z[:, 0]
      loss = float(np.logaddexp(0.0, -m).sum())
      dz = (-s / (1.0 + np.exp(m)))[:, None]
    else:
      zmax = z.max(axis=1, keepdims=True)
      lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
      loss = float((lse - (z * onehot).sum(axis=1)).sum())
      dz = np.exp(z - lse[:, None]) - onehot
    grad_w = np.asarray(xt @ dz) + l2 * w
    loss += 0.5 * l2 * float((w * w).sum())
    return loss, np.concatenate([grad_w.ravel(), dz.sum(axis=0)])

  res = minimize(objective, np.zeros(v * k + k), jac=True, method="L-BFGS-B",
                 options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-12})
  return res.x[:v * k].reshape(v, k)


def columns(ids_NxL: np.ndarray, labels: np.ndarray, vocab_size: int, num_labels: int,
            is_regression: bool = False) -> np.ndarray:
  """(V, k) float32: the linear model's weights, each column at unit std over the pieces the training
  texts have, 0 elsewhere."""
  x, present, _ = tfidf(ids_NxL, vocab_size)
  w = fit_linear(x, labels, num_labels, is_regression)
  w = np.where(present[:, None], w, 0.0)
  sd = w[present].std(axis=0, keepdims=True) if present.any() else np.ones((1, w.shape[1]))
  return (w / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def apply(params, cols_VxK: np.ndarray, members: list[bool] | None = None):
  """Stacked params (leading axis G) with the last k columns of each member i's token table (members[i],
  default all) replaced by `cols_VxK`; a table narrower than 2k columns, or params without a token
  table, are returned as they are (the caller says so)."""
  emb = params.get("encoder", {}).get("embedder", {}).get("token")
  if emb is None or not fits(emb["embedding"].shape[-1], cols_VxK.shape[1]):
    return params
  stack = np.array(emb["embedding"])
  k = cols_VxK.shape[1]
  for i in range(stack.shape[0]):
    if members is None or members[i]:
      stack[i, :, -k:] = cols_VxK.astype(stack.dtype)
  emb["embedding"] = stack
  return params


def fits(table_width: int, k: int) -> bool:
  """Label columns take at most half the table: the token vectors keep the rest."""
  return 2 * k <= table_width


_MEMO: dict[tuple, np.ndarray] = {}  # the last fit: consecutive runs on one training split and vocabulary share it


def for_run(cfg, train, task) -> np.ndarray | None:
  """The label column of a run (cfg.label_columns on, a two-class task, its token table wide enough),
  fitted once for consecutive runs on the same training split (encoded at the same length) and
  vocabulary; prints what it did, or why not. None when off. Two-class tasks only: that is where they
  were measured to help (four tasks, 20 splits); on a three-class task the C columns lost 1.5 points over
  5 splits, and regression is not measured (README, "Label columns"), so those train from the token
  vectors alone."""
  import hashlib
  if not cfg.get("label_columns", False):
    return None
  if task.is_regression or task.num_labels != 2:
    kind = "a regression task" if task.is_regression else f"{task.num_labels} classes"
    print(f"label columns: none ({kind}: they are used on two-class tasks, where they were measured to help)",
          flush=True)
    return None
  vocab, width = int(cfg.model.vocab_size), _table_width(cfg.model)
  if not fits(width, 1):
    print(f"label columns: none (the token table's {width} columns leave no room for one beside the token "
          f"vectors)", flush=True)
    return None
  ids, labels = np.ascontiguousarray(train.ids), np.ascontiguousarray(train.labels)
  key = (hashlib.sha256(ids.tobytes() + labels.tobytes()).hexdigest(), vocab)
  if key not in _MEMO:
    _MEMO.clear()
    _MEMO[key] = columns(ids, labels, vocab, 2)
  cols = _MEMO[key]
  print(f"label columns: the token table's last 1 column from a linear model of the training split's pieces "
        f"({int((cols != 0).any(axis=1).sum())} pieces)", flush=True)
  return cols


def _table_width(model_cfg) -> int:
  return int(model_cfg.embed_dim if model_cfg.embedder == "nano" else model_cfg.hidden)
