"""Plain renderers: the answer text to a stream as it is committed, search steps to a log.

Used when stdout is piped (only the answer goes to stdout) and by ``run`` in a terminal.
"""

from __future__ import annotations

from typing import IO, Iterable

from rainlocal.search.events import AnswerStream, Check, Done, Gate, Rewind, Step


def format_step(step: Step, limit: int = 10) -> str:
    """One -v log entry: the root's candidates with prior, visits and value."""
    head = f"[rain] searches={step.searches} evaluations={step.evaluations} best={step.best_value:+.3f}"
    if step.committed:
        head += " commit"
    rows = sorted(step.candidates, key=lambda c: (-c.n, -c.q))[:limit]
    lines = [head] + [
        f"    n={c.n:6.2f} fn={c.fn:3d} q={c.q:+.3f} p={c.p:.3f}  {c.text!r}" for c in rows
    ]
    return "\n".join(lines)


def format_check(ev: Check | Rewind | Gate) -> str:
    """One -v log line for a judged draft (fast profile), a rewind, or the request gate."""
    if isinstance(ev, Gate):
        return f"[fast] request P(unsafe)={ev.p_unsafe:.3f}: {ev.decision}"
    if isinstance(ev, Rewind):
        where = "further back, dropping held text" if ev.further else "to the clause start"
        return f"[fast] rewind {where}: {ev.dropped!r}"
    parts = "".join(f" {k}={v:.3f}" for k, v in ev.detail.items())
    return f"[fast] {ev.verdict} score={ev.score:+.3f}{parts} {ev.text!r}"


def log_event(ev, log: IO[str] | None) -> None:
    """Write one event to the ``-v`` log: the search steps at each commit, every judged draft and rewind."""
    if log is None:
        return
    if isinstance(ev, Step) and ev.committed:
        log.write(format_step(ev) + "\n")
    elif isinstance(ev, (Check, Rewind, Gate)):
        log.write(format_check(ev) + "\n")
    else:
        return
    log.flush()


def stream_answer(events: Iterable, out: IO[str] | None, log: IO[str] | None = None) -> Done:
    """Write committed text to ``out`` (flushing each commit) and return the final event.

    ``log`` receives the search steps at each commit and every judged draft and rewind (``-v``)."""
    stream = AnswerStream(events, on_event=lambda ev: log_event(ev, log))
    for chunk in stream:
        if out is not None:
            out.write(chunk)
            out.flush()
    return stream.finish()
