"""Label columns: the token table's last columns from a linear model of the training split's pieces.

A linear model on the bag of the run's own pieces (TF-IDF weights, L2-regularised logistic regression)
is as strong as the word n-gram one every search here is measured against, or stronger, and it learns
one weight per piece and class from the training split alone. A network from token vectors has to learn the same per-piece evidence
through a table whose rows start at corpus co-occurrence vectors that say little about the labels
(logistic regression on the mean token vector of a text: 62 % on amazon at r = 16, against 76 % on the
pieces themselves; README, "Label columns"). So the init writes the linear model's weights into the
table: k = 1 column for two classes (the weight vector of the positive logit) and for regression (ridge
weights), k = C columns for C > 2 classes (the softmax weights), each weight times its piece's idf (so
that a text's mean of a column is the TF-IDF score up to its length normalisation), each column scaled to
unit standard deviation
over the pieces the training split has (the N(0, 1) scale of the table; pieces it lacks get 0), in the
table's last k columns, where the token vectors' least informative columns were (their columns come in
order of singular value). The model then trains as before; no parameter is added, so memory and the
C export are unchanged.

A network still has to carry that column from the table to the logits, and on a small task it overfits
first (amazon: test accuracy peaks after one or two epochs). A model with `label_readout` (configs.py: C
weights, added to the logits: with two classes each times the text's mean of the last column, with C > 2
logit c's times the mean of its own column c) starts as the linear model instead: its readout and head
bias come from a maximum-likelihood fit of the labels on those means (two classes: a one-feature logistic
regression), and the head's kernel starts at 0, so the first logits are the linear model's (up to the
TF-IDF weighting) and the network learns what it adds.

The linear model is sklearn's defaults written out (raw counts, smoothed idf ln((1 + n) / (1 + df)) + 1,
rows L2-normalised; loss summed over examples plus ||W||^2 / 2, the intercepts unpenalised) and solved
with scipy's L-BFGS-B, which jax already needs, so the core install needs no scikit-learn; a test checks
the weights against scikit-learn's LogisticRegression where it is installed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from embbert_jax.configs import PAD_ID, label_width, table_width

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


def _softmax_nll(z: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
  """The summed softmax cross-entropy of logits `z` (N, k) against `onehot`, and its gradient in z."""
  zmax = z.max(axis=1, keepdims=True)
  lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
  return float((lse - (z * onehot).sum(axis=1)).sum()), np.exp(z - lse[:, None]) - onehot


def fit_linear(x, labels: np.ndarray, num_labels: int, is_regression: bool = False, l2: float = 1.0,
               max_iter: int = 500, intercept: bool = False):
  """Weights (V, k) of the linear model minimising sum of losses + l2 * ||W||^2 / 2 (intercepts free):
  logistic (k = 1) for two classes, softmax (k = C) for more, squared error (k = 1) for regression;
  with `intercept`, (weights, intercepts (k,))."""
  from scipy.optimize import minimize
  n, v = x.shape
  y = np.asarray(labels)
  k = label_width(num_labels, is_regression)
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
      loss, dz = _softmax_nll(z, onehot)
    grad_w = np.asarray(xt @ dz) + l2 * w
    loss += 0.5 * l2 * float((w * w).sum())
    return loss, np.concatenate([grad_w.ravel(), dz.sum(axis=0)])

  res = minimize(objective, np.zeros(v * k + k), jac=True, method="L-BFGS-B",
                 options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-12})
  w = res.x[:v * k].reshape(v, k)
  return (w, res.x[v * k:]) if intercept else w


def columns(ids_NxL: np.ndarray, labels: np.ndarray, vocab_size: int, num_labels: int,
            is_regression: bool = False) -> np.ndarray:
  """(V, k) float32: the linear model's weights times each piece's idf (what one occurrence of the piece
  adds to the TF-IDF model's logit, before the text's length normalisation), each column at unit std over
  the pieces the training texts have, 0 elsewhere. With the idf in, a text's mean of the column (the
  readout's feature) is the TF-IDF model's score up to its normalisation: over five splits the readout
  probes level with the full model on nyt, 0.6 points under it on amazon and 2.7 above it on tweets,
  where the bare weights were 3.4 under it on nyt and tweets (README, "The label readout")."""
  x, present, idf = tfidf(ids_NxL, vocab_size)
  w = fit_linear(x, labels, num_labels, is_regression)
  w = np.where(present[:, None], w * idf[:, None], 0.0)
  sd = w[present].std(axis=0, keepdims=True) if present.any() else np.ones((1, w.shape[1]))
  return (w / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def label_feature(ids_NxL: np.ndarray, cols_Vxk: np.ndarray) -> np.ndarray:
  """(N, k) the mean of the columns `cols_Vxk` over each text's real (non-[PAD]) positions:
  models.label_feature."""
  ids = np.asarray(ids_NxL)
  cols = np.asarray(cols_Vxk).reshape(cols_Vxk.shape[0], -1)
  keep = (ids != PAD_ID)[..., None]
  return (cols[ids] * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)


def readout(ids_NxL: np.ndarray, labels: np.ndarray, cols_Vxk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(slopes (C,), intercepts (C,)): the `label_readout` weights with which the classifier starts as the
  linear model of the pieces, its evidence averaged over the text (two classes: 75.26 against 75.85 % for
  the TF-IDF model itself over amazon's five splits, README). Logit c is slope_c x feature + intercept_c,
  the feature (label_feature) one column shared by both logits for two classes, column c for C > 2: the
  maximum-likelihood fit on the training split (two classes: the logistic regression on the one feature,
  split evenly between the logits, (-s/2, s/2) and (-b/2, b/2))."""
  import scipy.sparse as sp
  f = label_feature(ids_NxL, cols_Vxk)
  if f.shape[1] == 1:
    w, b = fit_linear(sp.csr_matrix(f), labels, 2, l2=1e-6, intercept=True)
    s, i = float(w[0, 0]), float(b[0])
    return np.array([-s / 2, s / 2]), np.array([-i / 2, i / 2])
  from scipy.optimize import minimize
  c = f.shape[1]
  onehot = np.eye(c)[np.asarray(labels).astype(np.int64)]  # k = C columns for C > 2 (configs.label_width)

  def objective(theta):  # softmax loss of z = a * f + b, plus 1e-6 ||a||^2 / 2 as fit_linear's
    a, b = theta[:c], theta[c:]
    z = f * a + b
    loss, dz = _softmax_nll(z, onehot)
    loss += 0.5e-6 * float(a @ a)
    return loss, np.concatenate([(dz * f).sum(axis=0) + 1e-6 * a, dz.sum(axis=0)])

  res = minimize(objective, np.concatenate([np.ones(c), np.zeros(c)]), jac=True, method="L-BFGS-B",
                 options={"maxiter": 1000, "gtol": 1e-8, "ftol": 1e-14})
  return res.x[:c], res.x[c:]


@dataclasses.dataclass(frozen=True)
class Fit:
  """A run's label columns (V, k) and, for a model with `label_readout`, its starting (slopes, intercepts),
  each (C,)."""
  columns: np.ndarray
  readout: tuple[np.ndarray, np.ndarray] | None = None


def apply(params, fit: Fit, members: list[bool] | None = None):
  """Stacked params (leading axis G) with the last k columns of each member i's token table (members[i],
  default all) replaced by the fit's columns; where the params have a `label_readout` and the fit its
  weights, that member's head starts as the linear model: the readout and bias at the fit's slopes and
  intercepts and a zero kernel (it learns from there). A table narrower than 2k columns, or params
  without a token table, are returned as they are (the caller says so)."""
  emb = params.get("encoder", {}).get("embedder", {}).get("token")
  cols = fit.columns
  if emb is None or not fits(emb["embedding"].shape[-1], cols.shape[1]):
    return params
  stack = np.array(emb["embedding"])
  k = cols.shape[1]
  head = params.get("head", {})
  starts = "readout" in head and fit.readout is not None
  if starts:
    ro, bias, kernel = (np.array(a) for a in (head["readout"], head["dense"]["bias"], head["dense"]["kernel"]))
    slopes, icpts = fit.readout
  for i in range(stack.shape[0]):
    if members is None or members[i]:
      stack[i, :, -k:] = cols.astype(stack.dtype)
      if starts:
        ro[i], bias[i], kernel[i] = slopes, icpts, 0.0
  emb["embedding"] = stack
  if starts:
    head["readout"], head["dense"]["bias"], head["dense"]["kernel"] = ro, bias, kernel
  return params


def fits(table_width: int, k: int) -> bool:
  """Label columns take at most half the table: the token vectors keep the rest."""
  return 2 * k <= table_width


_MEMO: dict[tuple, Fit] = {}  # the last fit: consecutive runs on one training split and vocabulary share it


def for_run(cfg, train, task) -> Fit | None:
  """The label columns of a run (cfg.label_columns on, its token table wide enough; with more than two
  classes only for a model with `label_readout`), fitted once for consecutive runs on the same training
  split (encoded at the same length) and vocabulary; prints what it did, or why not. None when off. On a
  three-class task the C columns without the readout lost 1.5 points over 5 splits; with it, +0.69 over 11
  splits of three multi-class tasks (+3.50 on a 4-class topic task of 3,200 training texts, -0.91 on the
  three-class rating task). Regression is not measured (README, "Label columns"): those, and multi-class
  models without the readout, train from the token vectors alone."""
  import hashlib
  if not cfg.get("label_columns", False):
    return None
  readout_on = bool(cfg.model.get("label_readout", False))
  if task.is_regression or (task.num_labels > 2 and not readout_on):
    kind = "a regression task" if task.is_regression else f"{task.num_labels} classes without label_readout"
    print(f"label columns: none ({kind}: they are used on two-class tasks, and on more classes with the "
          f"readout, where they were measured to help)", flush=True)
    return None
  k = label_width(task.num_labels)
  vocab, table = int(cfg.model.vocab_size), table_width(cfg.model)
  if not fits(table, k):
    print(f"label columns: none (the token table's {table} columns leave no room for {k} beside the token "
          f"vectors)", flush=True)
    return None
  ids, labels = np.ascontiguousarray(train.ids), np.ascontiguousarray(train.labels)
  key = (hashlib.sha256(ids.tobytes() + labels.tobytes()).hexdigest(), vocab, task.num_labels)
  if key not in _MEMO:
    _MEMO.clear()
    cols = columns(ids, labels, vocab, task.num_labels)
    _MEMO[key] = Fit(cols, readout(ids, labels, cols))
  fit = _MEMO[key]
  start = ""
  if readout_on:
    slopes, icpts = fit.readout
    start = (f"; the classifier starts as it (label_readout: slopes {np.round(slopes, 3).tolist()}, "
             f"intercepts {np.round(icpts, 3).tolist()})")
  print(f"label columns: the token table's last {k} column{'s' if k > 1 else ''} from a linear model of the "
        f"training split's pieces ({int((fit.columns != 0).any(axis=1).sum())} pieces){start}", flush=True)
  return fit

