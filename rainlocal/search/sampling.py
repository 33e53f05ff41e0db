"""Small numpy helpers shared by vanilla decoding and the RAIN search.

Every random draw takes an explicit ``numpy.random.Generator`` so a seed fixes the whole answer.
Ties are broken towards the lower token id everywhere, so results do not depend on sort internals.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities (float64) of logits or unnormalised log-probs ``x``."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x)
    if not np.isfinite(m):
        raise ValueError("log_softmax of a vector without a finite entry")
    z = x - m
    return z - np.log(np.sum(np.exp(z)))


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities (float64) of logits or unnormalised log-probs ``x``."""
    return np.exp(log_softmax(x))


def top_k_ids(x: np.ndarray, k: int) -> np.ndarray:
    """Ids of the ``k`` largest entries of ``x``, largest first (ties: lower id first)."""
    x = np.asarray(x)
    n = x.shape[0]
    if k <= 0 or k >= n:
        return np.lexsort((np.arange(n), -x))
    # argpartition finds a superset boundary cheaply; include every tie of the k-th value.
    part = np.argpartition(-x, k - 1)[:k]
    kth = np.min(x[part])
    cand = np.flatnonzero(x >= kth)
    order = np.lexsort((cand, -x[cand]))
    return cand[order][:k]


def top_k_dist(logprobs: np.ndarray, k: int, temp: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely tokens and their probabilities renormalised among themselves at ``temp``.

    Returns ``(ids, probs)`` sorted by probability, most likely first. ``k <= 0`` keeps the whole
    vocabulary.
    """
    ids = top_k_ids(logprobs, k)
    lp = np.asarray(logprobs, dtype=np.float64)[ids]
    if temp > 0 and temp != 1.0:
        lp = lp / temp
    return ids, softmax(lp)


def sample_index(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Index drawn from (possibly unnormalised, non-negative) ``probs`` with one uniform draw."""
    c = np.cumsum(probs, dtype=np.float64)
    u = rng.random() * c[-1]
    i = int(np.searchsorted(c, u, side="right"))
    return min(i, len(c) - 1)


def sample_token(
    logprobs: np.ndarray,
    rng: np.random.Generator,
    *,
    temp: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> int:
    """One token from next-token ``logprobs``: temperature, then top-k, then top-p (nucleus).

    ``temp <= 0`` is greedy (argmax, lowest id on ties) and draws nothing from ``rng``.
    ``top_k <= 0`` and ``top_p >= 1`` disable those filters.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    if temp <= 0:
        return int(np.argmax(lp))
    if temp != 1.0:
        lp = lp / temp
    if top_k > 0 and top_k < lp.shape[0]:
        ids = top_k_ids(lp, top_k)
    elif top_p < 1.0:
        ids = np.lexsort((np.arange(lp.shape[0]), -lp))
    else:
        probs = np.exp(lp - np.max(lp))
        return sample_index(probs, rng)
    probs = softmax(lp[ids])
    if top_p < 1.0:
        cum = np.cumsum(probs)
        keep = int(np.searchsorted(cum, top_p, side="left")) + 1
        ids, probs = ids[:keep], probs[:keep]
    return int(ids[sample_index(probs, rng)])
