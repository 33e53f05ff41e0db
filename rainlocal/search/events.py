"""Events a decoding strategy yields; renderers (plain stream, rich live view, JSON) consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Commit:
    """Tokens added to the answer for good (RAIN: one committed token set; vanilla: one token)."""

    tokens: list[int]
    text: str


@dataclass
class Candidate:
    """A root child as the search currently sees it (for -v logs and the chat's search view)."""

    text: str
    p: float
    n: float
    fn: int
    q: float


@dataclass
class Step:
    """Search progress under the current root, emitted after each search and at commit time."""

    searches: int
    evaluations: int
    best_value: float
    candidates: list[Candidate]
    committed: bool = False


@dataclass
class Done:
    """The answer is complete; ``stop_reason`` is one of eos, stop, length, interrupted."""

    tokens: list[int]
    text: str
    stop_reason: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Activity:
    """What the fast loop is doing now: ``drafting``, ``checking`` or ``searching`` (status lines)."""

    what: str


@dataclass
class Check:
    """The fast loop judged a drafted clause: ``verdict`` is accept (shown), hold (kept, not shown yet)
    or reject (the loop rewinds and searches)."""

    text: str
    score: float
    verdict: str


@dataclass
class Rewind:
    """The fast loop took back unshown text: the rejected clause (``further``: and the held clauses
    before it, because the judge was sure the answer was heading somewhere bad)."""

    dropped: str
    further: bool
    score: float
