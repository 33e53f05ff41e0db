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


class LogitsCache:
    """Token tuple -> next-token log-probs; see the module docstring."""

    def __init__(self, n_vocab: int, *, full_bytes: int = FULL_BYTES, exact_bytes: int = EXACT_BYTES,
                 top_bytes: int = TOP_BYTES, top_k: int = TOP_K):
        self.n_vocab = n_vocab
        self.full_bytes = full_bytes
        self.exact_bytes = exact_bytes
        self.top_bytes = top_bytes
        self.top_k = top_k
        self._full: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._exact: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._exact_used = 0
        self._top: OrderedDict[tuple[int, ...], _Top] = OrderedDict()
        self._full_used = 0
        self._top_used = 0
        self.expanded = 0  # reads served from a demoted row
        self.refused = 0  # exact reads that found only a demoted row

    def __contains__(self, key: tuple[int, ...]) -> bool:
        return key in self._full or key in self._exact or key in self._top

    def __len__(self) -> int:
        return len(self._full) + len(self._exact) + len(self._top)

    @property
    def budget(self) -> int:
        return self.full_bytes + self.exact_bytes + self.top_bytes

    @property
    def nbytes(self) -> int:
        return self._full_used + self._exact_used + self._top_used

    def get(self, key: tuple[int, ...], *, exact: bool = False) -> np.ndarray | None:
        for pool in (self._full, self._exact):
            row = pool.get(key)
            if row is not None:
                pool.move_to_end(key)
                return row
        top = self._top.get(key)
        if top is None:
            return None
        if exact:
            self.refused += 1
            return None
        self._top.move_to_end(key)
        self.expanded += 1
        return top.expand(self.n_vocab)

    def put(self, key: tuple[int, ...], row: np.ndarray, *, exact: bool = False) -> None:
        """Keep ``row``; ``exact`` rows (asked for by a whole-vocabulary sampler) stay whole longer."""
        old = self._top.pop(key, None)
        if old is not None:
            self._top_used -= old.nbytes
        if key in self._full:
            self._full_used -= self._full.pop(key).nbytes
        if key in self._exact:
            self._exact_used -= self._exact.pop(key).nbytes
        if exact:
            self._exact[key] = row
            self._exact_used += row.nbytes
            while self._exact_used > self.exact_bytes and len(self._exact) > 1:
                k, r = self._exact.popitem(last=False)
                self._exact_used -= r.nbytes
                self._demote(k, r)
            return
        self._full[key] = row
        self._full_used += row.nbytes
        while self._full_used > self.full_bytes and len(self._full) > 1:
            k, r = self._full.popitem(last=False)
            self._full_used -= r.nbytes
            self._demote(k, r)

    def _demote(self, key: tuple[int, ...], row: np.ndarray) -> None:
        if self.top_bytes <= 0:
            return
        top = _Top(row, self.top_k)
        self._top[key] = top
        self._top_used += top.nbytes
        while self._top_used > self.top_bytes and self._top:
            _, t = self._top.popitem(last=False)
            self._top_used -= t.nbytes

    def clear(self) -> None:
        self._full.clear()
        self._exact.clear()
        self._top.clear()
        self._full_used = self._exact_used = self._top_used = 0
