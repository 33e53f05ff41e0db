"""L2-regularised logistic regression and the agreement measures, in plain numpy.

Why not scikit-learn: a probe is one weight vector over a few hundred to a few thousand features,
fitted a few dozen times per calibration; Newton's method on standardised features converges in
under ten steps, and a heavy dependency for that is not worth it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Linear:
    """``P(y=1 | x) = sigmoid(((x - mean) / scale) @ w + b)``."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.w + self.b

    def prob(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(x))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


@dataclass
class Basis:
    """Standardisation plus the top principal directions of some training rows: computed once and shared
    by every probe fitted on those rows (the eigen-decomposition is the costly part of a fit)."""

    mean: np.ndarray
    scale: np.ndarray
    vecs: np.ndarray | None  # [d, dims], or None for all standardised features

    def project(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z if self.vecs is None else z @ self.vecs


def basis_of(x: np.ndarray, dims: int | None = 256, max_rows: int = 4000, seed: int = 0) -> Basis:
    """Why the projection: a residual stream has 576 to 1,536 dimensions and a few thousand labelled rows;
    Newton's method on 256 components is far cheaper per step and, with the L2 penalty, fits as well (the
    component weights fold back into one weight vector over the raw state). The directions come from at
    most ``max_rows`` of the rows (a sample is enough to find where the variance lies)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    if dims is None or dims >= x.shape[1]:
        return Basis(mean, scale, None)
    rows = x if len(x) <= max_rows else x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    z = (rows - mean) / scale
    _, vecs = np.linalg.eigh(z.T @ z)
    return Basis(mean, scale, vecs[:, ::-1][:, :dims].copy())


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, *, dims: int | None = 256, basis: Basis | None = None,
                 weights: np.ndarray | None = None, iters: int = 25, projected: np.ndarray | None = None) -> Linear:
    """Minimise ``sum_i w_i log-loss_i + ||w||^2 / (2 c)`` (the intercept not penalised) by Newton's method,
    on the standardised features' top ``dims`` principal components (``basis_of``; pass ``basis`` and, to
    save the projection too, ``projected = basis.project(x)``).

    ``weights`` (default: balanced classes) keep a rare positive class (101 harmful replies in 1,690)
    from being ignored; probabilities are then those of a balanced prior, which is what a threshold
    at 0.5 should mean for a judge."""
    y = np.asarray(y, dtype=np.float64)
    if basis is None:
        basis = basis_of(x, dims)
    z = projected if projected is not None else basis.project(x)
    n, d = z.shape
    if weights is None:
        pos = max(y.sum(), 1.0)
        neg = max(n - y.sum(), 1.0)
        weights = np.where(y > 0.5, n / (2 * pos), n / (2 * neg))
    sw = np.asarray(weights, dtype=np.float64)
    za = np.hstack([z, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, 1.0 / c)
    reg[-1] = 1e-8
    for _ in range(iters):
        p = sigmoid(za @ theta)
        grad = za.T @ (sw * (p - y)) + reg * theta
        h = za.T @ (za * (sw * p * (1 - p))[:, None])
        h[np.diag_indices_from(h)] += reg
        step = np.linalg.solve(h, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    w = theta[:-1] if basis.vecs is None else basis.vecs @ theta[:-1]
    return Linear(mean=basis.mean, scale=basis.scale, w=w, b=float(theta[-1]))


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (ties count half): P(a positive scores above a negative)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    _, inv, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inv]  # 1-based ranks, ties averaged
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def kappa(pred: Sequence[bool], labels: Sequence[bool]) -> float:
    """Cohen's kappa of two binary labelings."""
    a = np.asarray(pred).astype(bool)
    b = np.asarray(labels).astype(bool)
    n = len(a)
    if n == 0:
        return float("nan")
    po = float((a == b).mean())
    pe = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return 1.0 if pe >= 1.0 else (po - pe) / (1 - pe)


def kappa_multi(pred: Sequence[str], labels: Sequence[str]) -> float:
    """Cohen's kappa of two labelings with any number of classes."""
    a, b = list(pred), list(labels)
    n = len(a)
    if n == 0:
        return float("nan")
    classes = sorted(set(a) | set(b))
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((a.count(c) / n) * (b.count(c) / n) for c in classes)
    return 1.0 if pe >= 1.0 else (po - pe) / (1 - pe)


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """A fold number per row such that all rows of one group (one prompt) share a fold."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    fold_of = {uniq[i]: int(j % k) for j, i in enumerate(perm)}
    return np.array([fold_of[g] for g in groups])
