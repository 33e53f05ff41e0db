"""The slot table: which token sequence each llama.cpp sequence slot holds in the KV cache.

Plain Python on purpose: choosing the slot for a request (longest common prefix, extend, fork or
rewind), and which branch to evict when the KV cache is full, are decisions that must be right
for the search to be cheap, and they can be tested without a model. The table changes the KV cache
only through the two operations of ``memory``: ``copy(src, dst, n)`` (share the first ``n``
positions of ``src`` with ``dst``) and ``remove(seq_id, start) -> bool`` (drop positions from
``start`` on; False when the model cannot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from rainlocal.errors import EngineError


class SeqMemory(Protocol):
    def copy(self, src: int, dst: int, n: int) -> None: ...

    def remove(self, seq_id: int, start: int) -> bool: ...


@dataclass
class Slot:
    """One llama.cpp sequence: the tokens it holds in the KV cache."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    m = min(len(a), len(b))
    if m == 0:
        return 0
    neq = np.flatnonzero(np.asarray(a[:m], dtype=np.int64) != np.asarray(b[:m], dtype=np.int64))
    return int(neq[0]) if len(neq) else m


class SlotTable:
    """``n_seq`` slots over one unified KV cache; see the module docstring."""

    def __init__(self, n_seq: int, memory: SeqMemory):
        self.slots = [Slot(seq_id=i) for i in range(n_seq)]
        self.memory = memory
        self._clock = 0
        #: seq_id -> how many leading cells predate ``begin_scratch`` (None: not in a scratch span).
        self._scratch: dict[int, int] | None = None

    def touch(self, slot: Slot) -> None:
        self._clock += 1
        slot.last_used = self._clock

    def longest_cached(self, seq: Sequence[int]) -> int:
        """How many leading tokens of ``seq`` some slot already holds."""
        return max((common_prefix(s.tokens, seq) for s in self.slots if s.tokens), default=0)

    def holding(self, seq: Sequence[int]) -> Slot | None:
        """A slot whose tokens start with all of ``seq``."""
        key = list(seq)
        return next((s for s in self.slots if s.tokens[: len(key)] == key and s.tokens), None)

    def assign(self, seq: Sequence[int], busy: set[int]) -> tuple[Slot, int]:
        """Pick the slot for ``seq``: extend a cached branch, or fork one at the common prefix.

        Returns the slot and how many leading tokens of ``seq`` it already holds (never all of
        them: at least the last token must be decoded to produce its logits). Slots in ``busy``
        (taken by other requests of the same batch) are neither extended nor truncated.
        """
        best, best_lcp = None, -1
        for s in self.slots:
            if not s.tokens:
                continue
            lcp = common_prefix(s.tokens, seq)
            if lcp > best_lcp:
                best, best_lcp = s, lcp
        keep = min(max(best_lcp, 0), len(seq) - 1)
        if best is not None and best.seq_id not in busy and best_lcp == len(best.tokens) and keep == best_lcp:
            self.touch(best)
            self._mark(best, keep)
            return best, keep
        if best is not None:
            self.touch(best)  # a fork source is hot (e.g. the judge's fixed prefix)
        target = self.free_slot(busy | ({best.seq_id} if best is not None else set()))
        if target is None:
            # Only the source itself is available: truncate it in place (a rewind).
            if best is None or best.seq_id in busy:
                raise EngineError("too many concurrent branches for the context's sequence slots")
            target = best
            self.truncate(target, keep)
            self._mark(target, keep)
        else:
            self.truncate(target, 0)
            self._mark(target, 0)
            if best is not None and keep > 0:
                self.memory.copy(best.seq_id, target.seq_id, keep)
                target.tokens = list(best.tokens[:keep])
        self.touch(target)
        return target, keep

    def free_slot(self, exclude: set[int]) -> Slot | None:
        """An empty slot, else the least recently used one, outside ``exclude``."""
        candidates = [s for s in self.slots if s.seq_id not in exclude]
        if not candidates:
            return None
        empty = [s for s in candidates if not s.tokens]
        if empty:
            return empty[0]
        return min(candidates, key=lambda s: s.last_used)

    def truncate(self, slot: Slot, n: int) -> None:
        """Keep the first ``n`` tokens of ``slot`` (a rewind)."""
        if n >= len(slot.tokens):
            return
        if not self.memory.remove(slot.seq_id, n):
            raise EngineError("this model cannot rewind a branch (partial sequence removal refused)")
        del slot.tokens[n:]
        if self._scratch is not None and slot.seq_id in self._scratch:
            self._scratch[slot.seq_id] = min(self._scratch[slot.seq_id], n)

    # ---- scratch spans: cells that must not outlive them ---------------------------------------
    def begin_scratch(self) -> None:
        """Note, from now on, how many leading cells of each slot written were there before.

        Why: a decode that stops part way up the model (``LlamaEngine.read_states``) leaves cells whose
        upper layers were never computed; a later full decode reusing them would read garbage. Every
        slot a request is assigned to in the span is marked with the cells it held of its own (an
        extension or a rewind keeps them, a fork keeps none: its cells are copied from a slot that may
        itself be scratch), and a truncation lowers a mark."""
        self._scratch = {}

    def end_scratch(self) -> None:
        """Cut every slot written since ``begin_scratch`` back to the cells that predate it."""
        marks, self._scratch = self._scratch or {}, None
        for slot in self.slots:
            if slot.seq_id in marks:
                self.truncate(slot, marks[slot.seq_id])

    def _mark(self, slot: Slot, n: int) -> None:
        if self._scratch is not None and slot.seq_id not in self._scratch:
            self._scratch[slot.seq_id] = n

    def evict_one(self, busy: set[int]) -> bool:
        """Free KV cells by dropping the least recently used branch that no request needs now."""
        idle = [s for s in self.slots if s.tokens and s.seq_id not in busy]
        if not idle:
            return False
        self.truncate(min(idle, key=lambda s: s.last_used), 0)
        return True

    def trim(self, keep: Sequence[Sequence[int]]) -> None:
        """Cut every branch back to the longest of ``keep`` it starts with, dropping the others."""
        for slot in self.slots:
            if slot.tokens:
                self.truncate(slot, max((len(k) for k in keep if common_prefix(slot.tokens, k) == len(k)), default=0))

    def clear(self) -> None:
        for s in self.slots:
            self.truncate(s, 0)
