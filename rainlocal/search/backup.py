"""Backup of a self-evaluation score along the searched path, with the similarity update (Eq. 2).

For every node on the path (root included), with score ``s``::

    n += 1;  fn += 1;  q += (s - q) / n            (running mean of the scores below the node)
    e += (embedding - e) / fn                      (non-root nodes, when an embedding is given)

Similarity update (Eq. 2), for every sibling X of a non-root path node Y whose embedding has cosine
similarity ``sim >= threshold`` with Y's (running-mean) embedding, with ``w = gamma * sim``::

    q_X = (q_X * n_X + w * s) / (n_X + w);   n_X += w;   fn_X unchanged

written here as ``q_X += w * (s - q_X) / max(n_X + w, 1)``. The two agree whenever ``n_X + w >= 1``,
which always holds inside the search (a sibling only has an embedding after a real visit, so
``n_X >= 1``). For a node with less than one visit's worth of weight, the node's initial value 0 keeps
the remaining weight; this reproduces the paper's worked example (gamma = 1, sim = 0.5, s = -1: a fresh
sibling goes from q = 0, n = 0 to q = -0.5, n = 0.5), which the literal formula would put at q = -1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rainlocal.search.tree import Node


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def visit(node: Node, s: float) -> None:
    """One real visit with score ``s``: counts up, value becomes the running mean."""
    node.n += 1.0
    node.fn += 1
    node.q += (s - node.q) / node.n


def update_embedding(node: Node, emb: np.ndarray) -> None:
    """Running mean of the node's embeddings over its real visits (call after ``visit``)."""
    emb = np.asarray(emb, dtype=np.float64)
    if node.e is None:
        node.e = emb.copy()
    else:
        node.e = node.e + (emb - node.e) / max(node.fn, 1)


def similarity_update(node: Node, weight: float, s: float) -> None:
    """Eq. 2: a pseudo-visit of weight ``gamma * sim`` with score ``s`` (``fn`` unchanged)."""
    if weight <= 0.0:
        return
    node.q += weight * (s - node.q) / max(node.n + weight, 1.0)
    node.n += weight


def share_with_siblings(node: Node, s: float, gamma: float, threshold: float) -> int:
    """Apply Eq. 2 to every sibling of ``node`` similar enough to it; returns how many were updated."""
    if node.e is None:
        return 0
    updated = 0
    for sib in node.siblings():
        if sib.e is None:
            continue
        sim = cosine(node.e, sib.e)
        if sim >= threshold:
            similarity_update(sib, gamma * sim, s)
            updated += 1
    return updated


def backup(
    path: Sequence[Node],
    s: float,
    embeddings: Sequence[np.ndarray | None] | None = None,
    *,
    similarity: bool = True,
    gamma: float = 0.2,
    threshold: float = 0.95,
) -> int:
    """Back ``s`` up along ``path`` (root first).

    ``embeddings[i]`` is the embedding for ``path[i + 1]`` (the root has none), or None to leave that
    node's embedding alone. Returns the number of similarity pseudo-visits handed out.
    """
    shared = 0
    for i, node in enumerate(path):
        visit(node, s)
        if i == 0 or embeddings is None:
            continue
        emb = embeddings[i - 1]
        if emb is None:
            continue
        update_embedding(node, emb)
        if similarity:
            shared += share_with_siblings(node, s, gamma, threshold)
    return shared
