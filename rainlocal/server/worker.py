"""One engine thread answering requests in arrival order, with a bounded queue and cancellation.

llama.cpp's context is not shared between threads, so answers are made one at a time on a single
worker thread (first come, first served); the event loop only queues and relays, which keeps
``/health`` and ``/v1/models`` answering while a slow RAIN answer runs. Each answer gets a cancel
flag that the search polls before every search (``should_stop``); a client that goes away sets it, so
its answer stops at once, and one that leaves before its turn is skipped. Events cross back to the
event loop through an ``asyncio.Queue`` per answer.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rainlocal.errors import RainlocalError
from rainlocal.search.events import Commit, Done
from rainlocal.server.translate import Answer


class QueueFull(Exception):
    """More answers are waiting than ``--max-queue`` allows."""


@dataclass
class Failed:
    """An answer that ended in an error (the message is one line, fit for a client)."""

    message: str
    status: int  # 400 for the request's fault, 500 otherwise


@dataclass(eq=False)  # hashed by identity: the worker keeps a set of open tickets
class Ticket:
    """One admitted answer: its cancel flag and the events the worker sends back."""

    id: str
    answer: Answer
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    why: str = "the client went away"  # said in the log when the answer stops early
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    def send(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class Worker:
    def __init__(self, generator, max_queue: int, log=sys.stderr):
        self.generator = generator
        self.max_queue = max_queue
        self.log = log
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rainlocal-engine")
        self._lock = threading.Lock()
        self._prepared: set[tuple[str, str]] = set()
        self._open: set[Ticket] = set()
        self.waiting = 0
        self.running = 0
        self.counts = {"served": 0, "cancelled": 0, "failed": 0, "rejected": 0}

    def submit(self, ticket: Ticket) -> None:
        """Queue an answer, or raise QueueFull (one answer runs, ``max_queue`` may wait)."""
        with self._lock:
            if self.running + self.waiting >= 1 + self.max_queue:
                self.counts["rejected"] += 1
                raise QueueFull
            self.waiting += 1
            self._open.add(ticket)
        self._pool.submit(self._run, ticket)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"running": self.running, "waiting": self.waiting, "max_queue": self.max_queue, **self.counts}

    def close(self) -> None:
        """Stop every answer (queued ones are skipped) and wait for the engine thread to finish."""
        with self._lock:
            for t in self._open:
                t.why = "the server is stopping"
                t.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, ticket: Ticket) -> None:
        with self._lock:
            self.waiting -= 1
            self.running += 1
        outcome = "served"
        try:
            if ticket.cancel.is_set():
                outcome = "cancelled"
                self._say(f"{ticket.id}: skipped before its turn ({ticket.why})")
                ticket.send(Done(tokens=[], text="", stop_reason="interrupted"))
                return
            outcome = self._answer(ticket)
        except RainlocalError as e:
            outcome = "failed"
            ticket.send(Failed(str(e), 400 if e.exit_code == 2 else 500))
        except Exception as e:  # a bug: the client gets one line, the log the traceback
            outcome = "failed"
            traceback.print_exc(file=self.log)
            ticket.send(Failed(f"internal error: {type(e).__name__}: {e}", 500))
        finally:
            with self._lock:
                self.running -= 1
                self.counts[outcome] += 1
                self._open.discard(ticket)

    def _answer(self, ticket: Ticket) -> str:
        a = ticket.answer
        self._prepare(a.gen)
        done: Done | None = None
        for ev in self.generator.stream(a.messages, a.gen, should_stop=ticket.cancel.is_set, stop=a.stop, raw=a.raw):
            if isinstance(ev, Commit):
                if ev.text:
                    ticket.send(ev)
            elif isinstance(ev, Done):
                done = ev
        assert done is not None
        ticket.send(done)
        if done.stop_reason == "interrupted":
            self._say(f"{ticket.id}: cancelled ({ticket.why}) after {len(done.tokens)} answer tokens")
            return "cancelled"
        return "served"

    def prepare(self, gen) -> None:
        """Before the engine thread starts: get the server's default judge ready, so that the first
        request is answered as fast as the others (``rainlocal serve`` calls it before listening)."""
        self._prepare(gen)

    def _prepare(self, gen) -> None:
        """``prepare_judge`` (the judge's cached prefix, the signal check) once per objective and score,
        as ``rainlocal run`` does before its first RAIN answer."""
        if gen.mode != "rain" or (gen.objective, gen.rain.score) in self._prepared:
            return
        from rainlocal.cli.common import prepare_judge

        prepare_judge(self.generator, gen)
        self._prepared.add((gen.objective, gen.rain.score))

    def _say(self, line: str) -> None:
        print(f"rainlocal: {line}", file=self.log, flush=True)
