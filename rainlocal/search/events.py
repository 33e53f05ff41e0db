"""Events a decoding strategy yields; renderers (plain stream, rich live view, JSON) consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator


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
    """The answer is complete; ``stop_reason`` is one of eos, stop, length, interrupted, judge (the fast
    loop's searches found nothing acceptable, ``max_failed_searches`` times in a row)."""

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
    #: What the score is made of, where the judge says (the latent judge: p_unsafe, p_comply, harm).
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class Gate:
    """The fast loop read the request before answering: ``p_unsafe`` (the latent judge's estimate) and
    what it decided: ``pass`` (no clause could be rejected, so the answer is drafted and shown as plain
    decoding would) or ``check`` (every clause is judged, and the opening is chosen among drafts)."""

    p_unsafe: float
    decision: str


@dataclass
class Rewind:
    """The fast loop took back unshown text: the rejected clause (``further``: and the held clauses
    before it, because the judge was sure the answer was heading somewhere bad)."""

    dropped: str
    further: bool
    score: float


class AnswerStream:
    """The one consumer of a strategy's events: iterating yields the committed text chunks (and hands
    every event to ``on_event``, e.g. a ``-v`` log or a live view); the answer runs once, lazily.

    ``done`` is the final ``Done`` once the stream ended; ``partial()`` is the answer so far (for an
    answer cut short by Ctrl-C); ``finish()`` runs the stream to its end and returns ``done``."""

    def __init__(self, events: Iterable[Any], on_event: Callable[[Any], None] | None = None):
        self._events = iter(events)
        self._on_event = on_event
        self.chunks: list[str] = []
        self._tokens: list[int] = []  # committed so far (for partial)
        self.done: Done | None = None

    def __iter__(self) -> Iterator[str]:
        yield from list(self.chunks)  # what an earlier iteration already produced
        for ev in self._events:
            if self._on_event is not None:
                self._on_event(ev)
            if isinstance(ev, Commit):
                self._tokens.extend(ev.tokens)
                if ev.text:
                    self.chunks.append(ev.text)
                    yield ev.text
            elif isinstance(ev, Done):
                self.done = ev

    def finish(self) -> Done:
        for _ in self:
            pass
        if self.done is None:
            raise RuntimeError("a decoding strategy must finish with Done")
        return self.done

    def partial(self, stop_reason: str = "interrupted") -> Done:
        return Done(tokens=list(self._tokens), text="".join(self.chunks), stop_reason=stop_reason)
