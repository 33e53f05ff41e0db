"""The logits cache, bounded in bytes: recent rows in full, older rows as their top tokens.

Why: every decoded request leaves a next-token row of ``n_vocab`` float32 (192 KiB for SmolLM2's
49k vocabulary, 1 MiB for gemma-3's 262k), and the search asks for the same sequences again (a
revisited leaf's rollout, the judge's shared prefixes, the prompt). Keeping thousands of full rows
cost more memory than the model. What the search reads from a row it asked for before is its top
tokens: candidate sets (top ``root_children``/``max_children + 1``, ``cand_top_k``), the drafting
sampler's ``top_k``, the judge's option letters. So the newest rows are kept whole (a byte budget)
and an older row is demoted to its ``top_k`` largest log-probs (ties kept together), the rest of
its mass spread evenly over the other tokens when it is expanded on read. Rows read by a sampler
over the whole vocabulary (rollouts at temperature 1) must be exact: ``get(..., exact=True)`` does
not serve a demoted row (the engine decodes it again, which moves its values by quantization noise
and can change a sampled token), and rows such a sampler asked for have a budget of their own, as
another rollout reads them again a few searches later.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

#: Default byte budgets: whole rows, whole rows a sampler over the whole vocabulary asked for
#: (rollouts: they are the ones read again by another rollout, a few searches later), demoted rows.
FULL_BYTES = 16 << 20
EXACT_BYTES = 64 << 20
TOP_BYTES = 8 << 20
#: Tokens kept of a demoted row: the widest top-k any search setting reads, with room to spare.
TOP_K = 256


class _Top:
    """A demoted row: its ``k`` largest log-probs and the log-prob each other token gets."""

    __slots__ = ("ids", "vals", "rest")

    def __init__(self, row: np.ndarray, k: int):
        n = row.shape[0]
        if k >= n:
            ids = np.arange(n)
        else:
            part = np.argpartition(-row, k - 1)[:k]
            kth = row[part].min()
            ids = np.flatnonzero(row >= kth)  # every tie of the k-th value stays
        self.ids = ids.astype(np.int32)
        self.vals = row[ids].astype(np.float32)
        n_rest = n - len(ids)
        kept = float(np.exp(self.vals.astype(np.float64)).sum())
        mass = max(1.0 - kept, 0.0)
        floor = float(self.vals.min()) if len(self.vals) else 0.0
        # The other tokens share what is left, never above the smallest kept value.
        self.rest = np.float32(min(np.log(mass / n_rest), floor) if n_rest and mass > 0 else -np.inf)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.vals.nbytes + 64

    def expand(self, n: int) -> np.ndarray:
        row = np.full(n, self.rest, dtype=np.float32)
        row[self.ids] = self.vals
        return row


class _Tier:
    """One least-recently-used pool of rows under a byte budget; ``keep_one`` never evicts its newest
    item, however large (a whole row above a tiny budget must still serve the read that follows)."""

    def __init__(self, budget: int, keep_one: bool):
        self.budget = budget
        self.keep_one = keep_one
        self.items: OrderedDict = OrderedDict()
        self.used = 0

    def touch(self, key: tuple[int, ...]) -> None:
        self.items.move_to_end(key)

    def discard(self, key: tuple[int, ...]) -> None:
        item = self.items.pop(key, None)
        if item is not None:
            self.used -= item.nbytes

    def add(self, key: tuple[int, ...], item) -> list:
        """Keep ``item`` as the newest; return the (key, item) pairs evicted to stay in budget, oldest first."""
        self.items[key] = item
        self.used += item.nbytes
        evicted = []
        while self.used > self.budget and len(self.items) > int(self.keep_one):
            k, old = self.items.popitem(last=False)
            self.used -= old.nbytes
            evicted.append((k, old))
        return evicted

    def clear(self) -> None:
        self.items.clear()
        self.used = 0


class LogitsCache:
    """Token tuple -> next-token log-probs; see the module docstring."""

    def __init__(self, n_vocab: int, *, full_bytes: int = FULL_BYTES, exact_bytes: int = EXACT_BYTES,
                 top_bytes: int = TOP_BYTES, top_k: int = TOP_K):
        self.n_vocab = n_vocab
        self.top_k = top_k
        self._full = _Tier(full_bytes, keep_one=True)
        self._exact = _Tier(exact_bytes, keep_one=True)  # rows a whole-vocabulary sampler asked for
        self._top = _Tier(top_bytes, keep_one=False)  # demoted rows (``_Top``)
        self._tiers = (self._full, self._exact, self._top)
        self.expanded = 0  # reads served from a demoted row
        self.refused = 0  # exact reads that found only a demoted row

    def __contains__(self, key: tuple[int, ...]) -> bool:
        return any(key in t.items for t in self._tiers)

    def __len__(self) -> int:
        return sum(len(t.items) for t in self._tiers)

    @property
    def budget(self) -> int:
        return sum(t.budget for t in self._tiers)

    @property
    def nbytes(self) -> int:
        return sum(t.used for t in self._tiers)

    def get(self, key: tuple[int, ...], *, exact: bool = False) -> np.ndarray | None:
        for tier in (self._full, self._exact):
            row = tier.items.get(key)
            if row is not None:
                tier.touch(key)
                return row
        top = self._top.items.get(key)
        if top is None:
            return None
        if exact:
            self.refused += 1
            return None
        self._top.touch(key)
        self.expanded += 1
        return top.expand(self.n_vocab)

    def put(self, key: tuple[int, ...], row: np.ndarray, *, exact: bool = False) -> None:
        """Keep ``row``; ``exact`` rows (asked for by a whole-vocabulary sampler) stay whole longer."""
        for tier in self._tiers:
            tier.discard(key)
        for k, r in (self._exact if exact else self._full).add(key, row):
            self._demote(k, r)

    def _demote(self, key: tuple[int, ...], row: np.ndarray) -> None:
        if self._top.budget <= 0:
            return
        self._top.add(key, _Top(row, self.top_k))

    def clear(self) -> None:
        for tier in self._tiers:
            tier.clear()
