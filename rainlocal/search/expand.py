"""Expansion: candidate token sets and their priors, and dynamic node addition.

Token-set length by absolute depth in the answer (``RainSettings.set_lengths``, default 1, 2, 4, then
10 for every deeper set), never reset by re-rooting and cut to the tokens left before ``max_tokens``.

* Single-token sets (depth 0): the ``root_children`` (10) most likely next tokens, priors = their
  softmax probabilities renormalised among themselves.
* Longer sets: one greedy continuation plus up to ``n_children - 1`` (9) distinct samples out of
  ``cand_tries`` draws from the top-``cand_top_k`` (15) distribution at ``cand_temp``; each set's raw
  prior is its joint probability under that distribution. The greedy set's probability is clamped to
  ``[max(p_s) + min(p_s), sum(p_s)]`` over the samples' probabilities ``p_s`` (so the greedy branch
  neither dwarfs nor vanishes behind the samples), then all priors are renormalised to sum to 1.
  A branch that produces an end-of-generation token stops there (the set ends with it).
* At the root, priors are mixed with the uniform distribution: ``(1 - 0.25) p + 0.25 / K``; the same
  mixing is applied again to the new root's children after every commit (``mix_root_priors``).

All candidate branches advance together: one ``engine.logprobs`` call per token position carries every
live branch (identical prefixes are sent once), tagged with phase "generate".

Dynamic node addition (reference code): at a node with fewer than ``max_children`` (20) children, all
of them visited, whose children's embeddings barely differ (L2 norm of the per-dimension variance
below ``dyn_var_coef * set length``) and whose best child value is below 0, add candidates: for
single-token sets the next most likely token, deeper a fresh greedy + one sample, keeping those not
already present.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from rainlocal.engine.base import Engine
from rainlocal.search.sampling import log_softmax, sample_index, top_k_dist, top_k_ids
from rainlocal.search.settings import RainSettings
from rainlocal.search.tree import Node


def set_length(settings: RainSettings, depth: int) -> int:
    """Length of the token set at absolute answer ``depth`` (0 = first token set of the answer)."""
    lengths = settings.set_lengths or (1,)
    return int(lengths[min(max(depth, 0), len(lengths) - 1)])


def normalise(raw: Sequence[float]) -> np.ndarray:
    a = np.asarray(raw, dtype=np.float64)
    total = float(a.sum())
    if not math.isfinite(total) or total <= 0.0:
        return np.full(len(a), 1.0 / max(len(a), 1))
    return a / total


def mix_uniform(priors: Sequence[float], x: float) -> np.ndarray:
    """``(1 - x) p + x / K``, renormalised."""
    p = np.asarray(priors, dtype=np.float64)
    if len(p) == 0:
        return p
    mixed = (1.0 - x) * p + x / len(p)
    return mixed / mixed.sum()


def mix_root_priors(root: Node, x: float) -> None:
    """Re-mix the (new) root's children priors with ``x`` uniform, as after each commit."""
    if not root.children:
        return
    mixed = mix_uniform([c.p for c in root.children], x)
    for child, p in zip(root.children, mixed):
        child.p = float(p)


def clamp_greedy(p_greedy: float, p_samples: Sequence[float]) -> float:
    """Greedy prior clamped to ``[max(p_s) + min(p_s), sum(p_s)]`` (unchanged without samples)."""
    if len(p_samples) == 0:
        return p_greedy
    ps = np.asarray(p_samples, dtype=np.float64)
    return float(max(min(p_greedy, ps.sum()), ps.max() + ps.min()))


def sample_candidates(
    engine: Engine,
    base: list[int],
    length: int,
    *,
    n_children: int,
    tries: int,
    top_k: int,
    temp: float,
    rng: np.random.Generator,
) -> list[tuple[tuple[int, ...], float]]:
    """Greedy continuation plus up to ``n_children - 1`` distinct samples of ``length`` tokens.

    Returns ``[(tokens, raw probability), ...]``, greedy first, the greedy probability clamped.
    ``base`` is the whole sequence (prompt + answer + path) the sets continue.
    """
    n_branches = 1 + max(tries, 0)
    branches: list[list[int]] = [[] for _ in range(n_branches)]
    logp = np.zeros(n_branches)
    alive = [True] * n_branches
    for _ in range(length):
        order: dict[tuple[int, ...], int] = {}
        for b in range(n_branches):
            if alive[b]:
                order.setdefault(tuple(branches[b]), len(order))
        if not order:
            break
        keys = list(order)
        lps = engine.logprobs([base + list(k) for k in keys], phase="generate")
        dists: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for b in range(n_branches):
            if not alive[b]:
                continue
            idx = order[tuple(branches[b])]
            if idx not in dists:
                dists[idx] = top_k_dist(lps[idx], top_k, temp)
            ids, probs = dists[idx]
            j = 0 if b == 0 else sample_index(probs, rng)
            tok = int(ids[j])
            logp[b] += math.log(max(float(probs[j]), 1e-300))
            branches[b].append(tok)
            if engine.is_eog(tok):
                alive[b] = False
    greedy = tuple(branches[0])
    seen = {greedy}
    samples: list[tuple[tuple[int, ...], float]] = []
    for b in range(1, n_branches):
        t = tuple(branches[b])
        if t in seen:
            continue
        seen.add(t)
        samples.append((t, math.exp(logp[b])))
        if len(samples) >= n_children - 1:
            break
    p_greedy = clamp_greedy(math.exp(logp[0]), [p for _, p in samples])
    return [(greedy, p_greedy)] + samples


def _store_top(node: Node, lp: np.ndarray, keep: int) -> None:
    ids = top_k_ids(lp, keep)
    node.top_ids = ids
    node.top_lps = np.asarray(lp, dtype=np.float64)[ids]


def expand(
    node: Node,
    engine: Engine,
    base: list[int],
    settings: RainSettings,
    rng: np.random.Generator,
    *,
    remaining: int,
) -> int:
    """Give the leaf ``node`` its children; returns how many. ``remaining`` = tokens left in the answer."""
    length = min(set_length(settings, node.depth + 1), remaining)
    if length <= 0:
        return 0
    if length == 1:
        lp = log_softmax(engine.logprobs([base], phase="generate")[0])
        k = max(settings.root_children, 1)
        ids = top_k_ids(lp, k)
        raw = np.exp(lp[ids])
        cands = [((int(t),), float(r)) for t, r in zip(ids, raw)]
        _store_top(node, lp, max(settings.max_children, k) + 1)
    else:
        cands = sample_candidates(
            engine,
            base,
            length,
            n_children=max(settings.n_children, 1),
            tries=settings.cand_tries,
            top_k=settings.cand_top_k,
            temp=settings.cand_temp,
            rng=rng,
        )
    priors = normalise([r for _, r in cands])
    if node.is_root:
        priors = mix_uniform(priors, settings.root_uniform)
    for (tokens, raw), p in zip(cands, priors):
        node.add_child(tokens, p, raw)
    return len(cands)


def embedding_spread(node: Node) -> float | None:
    """L2 norm of the per-dimension variance of the children's embeddings (None without any).

    Sample variance (ddof 1) as in the reference code; a single child counts as no spread.
    """
    embs = [c.e for c in node.children if c.e is not None]
    if not embs:
        return None
    if len(embs) == 1:
        return 0.0
    stacked = np.stack(embs)
    var = np.var(stacked, axis=0, ddof=1)
    # The reference threshold was set for 384-dimensional sentence embeddings; for unit vectors the
    # norm of the per-dimension variance shrinks like 1/sqrt(dim), so rescale to 384 dimensions.
    return float(np.linalg.norm(var) * np.sqrt(stacked.shape[1] / 384.0))


def should_add(node: Node, settings: RainSettings) -> bool:
    """Dynamic node addition conditions (see the module docstring)."""
    if not settings.dynamic_add or not node.children or len(node.children) >= settings.max_children:
        return False
    if any(c.fn < 1 for c in node.children):
        return False
    spread = embedding_spread(node)
    if spread is None:
        return False
    if spread >= settings.dyn_var_coef * set_length(settings, node.depth + 1):
        return False
    return max(c.q for c in node.children) < 0.0


def dynamic_add(
    node: Node,
    engine: Engine,
    base: list[int],
    settings: RainSettings,
    rng: np.random.Generator,
    *,
    remaining: int,
) -> int:
    """Add new candidates below ``node`` (conditions already checked); returns how many were added.

    Single-token sets: the top ``K + 1`` tokens (K = current children) renormalised among themselves,
    adding those missing. Longer sets: a fresh greedy + one sample; a new set's prior is its raw
    probability over the raw probabilities of all children plus the new ones. At the root the new
    priors are mixed with ``root_uniform / (K + added)``. Existing priors are left alone, as in the
    reference code.
    """
    present = node.child_tokens()
    nc = len(node.children)
    length = min(set_length(settings, node.depth + 1), remaining)
    if length <= 0:
        return 0
    new: list[tuple[tuple[int, ...], float, float]] = []  # tokens, prior, raw
    if length == 1:
        if node.top_ids is None:
            lp = log_softmax(engine.logprobs([base], phase="generate")[0])
            _store_top(node, lp, max(settings.max_children, settings.root_children) + 1)
        ids, lps = node.top_ids, node.top_lps
        k = nc + 1
        if k > len(ids):
            return 0
        probs = normalise(np.exp(lps[:k]))
        for t, p, lpv in zip(ids[:k], probs, lps[:k]):
            if (int(t),) not in present:
                new.append(((int(t),), float(p), math.exp(float(lpv))))
        total = k
    else:
        cands = sample_candidates(
            engine, base, length, n_children=2, tries=1,
            top_k=settings.cand_top_k, temp=settings.cand_temp, rng=rng,
        )
        fresh = [(t, r) for t, r in cands if t not in present]
        denom = sum(c.raw for c in node.children) + sum(r for _, r in fresh)
        for t, r in fresh:
            new.append((t, r / denom if denom > 0 else 1.0 / (nc + len(fresh)), r))
        total = nc + len(fresh)
    seen = set(present)
    added = 0
    for tokens, p, raw in new:
        if tokens in seen:
            continue
        seen.add(tokens)
        if node.is_root:
            p = (1.0 - settings.root_uniform) * p + settings.root_uniform / max(total, 1)
        node.add_child(tokens, p, raw)
        added += 1
    return added
