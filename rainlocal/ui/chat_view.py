"""The chat's terminal view (rich): the reply streaming as RAIN commits token sets under a live
status line, the finished reply rendered as Markdown, the search view (candidate branches under the
current position with their values and visit counts) and the branches RAIN rejected.

Only ``rainlocal chat`` in a terminal uses it; piped output goes through plain writes instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from rainlocal.search.events import Activity, Candidate, Check, Commit, Done, Gate, Rewind, Step

#: Rows of the live search view (the most visited candidates first).
SEARCH_ROWS = 8


def branch_text(text: str, width: int = 28) -> str:
    """A candidate's text on one line: newlines and tabs visible, long texts cut."""
    shown = text.replace("\n", "⏎").replace("\t", "⇥")
    if shown.strip() != shown or not shown:
        shown = f"“{shown}”"
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def keep_line_breaks(text: str) -> str:
    """Markdown joins single newlines into one paragraph; a model's line breaks (poems, addresses,
    step lists without markers) are meant, so make them hard breaks, except inside code fences."""
    out: list[str] = []
    fence: str | None = None
    lines = text.split("\n")
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None and line.strip() and i + 1 < len(lines) and lines[i + 1].strip():
            line = line.rstrip() + "  "
        out.append(line)
    return "\n".join(out)


def _ranked(cands: Iterable[Candidate]) -> list[Candidate]:
    """Most visited first, ties by value: the order RAIN commits in."""
    return sorted(cands, key=lambda c: (-c.n, -c.q, -c.p))


@dataclass
class CommitPoint:
    """One committed step: where the answer was, what was kept, what was considered instead."""

    after: str
    kept: Candidate
    rejected: list[Candidate]


@dataclass
class ReplyState:
    """What the live view shows; the generation loop updates it, the refresh thread reads it."""

    started: float = field(default_factory=time.perf_counter)
    text: str = ""
    tokens: int = 0
    searches: int = 0
    evaluations: int = 0
    best_value: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    commits: list[CommitPoint] = field(default_factory=list)
    done: Done | None = None
    searching: bool = False  # RAIN: show search counters from the start
    activity: str | None = None  # fast profile: drafting / checking / searching
    checks: int = 0
    rewinds: int = 0
    rejected: list[Check] = field(default_factory=list)  # fast profile: rejected clauses
    last_check: Check | None = None

    def feed(self, ev: Any) -> None:
        if isinstance(ev, Commit):
            self.text += ev.text
            self.tokens += len(ev.tokens)
        elif isinstance(ev, Step):
            if ev.committed:
                ranked = _ranked(ev.candidates)
                if ranked:
                    self.commits.append(CommitPoint(self.text, ranked[0], ranked[1:]))
            else:
                self.searches += 1
            self.evaluations = ev.evaluations
            self.best_value = ev.best_value
            self.candidates = list(ev.candidates)
        elif isinstance(ev, Activity):
            self.activity = ev.what
        elif isinstance(ev, Gate):
            self.activity = (f"answering: P(unsafe request) {ev.p_unsafe:.2f}, nothing to check" if ev.decision == "pass"
                             else f"checking every clause: P(unsafe request) {ev.p_unsafe:.2f}")
        elif isinstance(ev, Check):
            self.checks += 1
            self.last_check = ev
            if ev.verdict == "reject":
                self.rejected.append(ev)
        elif isinstance(ev, Rewind):
            self.rewinds += 1
        elif isinstance(ev, Done):
            self.done = ev

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class ChatView:
    """Everything the interactive chat prints (stdout is a terminal here)."""

    def __init__(self, console: Console | None = None, *, show_search: bool = False):
        self.console = console or Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        self.show_search = show_search
        self.state: ReplyState | None = None

    # ---- one-line messages ------------------------------------------------------------------
    def info(self, message: str) -> None:
        self.console.print(Text(message, style="dim"))

    def note(self, message: str) -> None:
        self.console.print(Text(message, style="cyan"))

    def error(self, message: str) -> None:
        self.err.print(Text(f"error: {message}", style="bold red"))

    def banner(self, model: str, mode: str, conversation: str, resumed: bool) -> None:
        head = Text()
        head.append("rainlocal chat", style="bold")
        head.append(f" · {model} · {mode}", style="")
        head.append(f" · {'resumed ' if resumed else ''}conversation {conversation}", style="dim")
        self.console.print(head)
        self.info('/help for commands · end a line with \\ or open """ for multi-line input · Ctrl-D to quit')

    def recap(self, records: list[dict[str, Any]], turns: int = 1) -> None:
        """The last ``turns`` exchanges of a resumed conversation, dimmed."""
        users = [i for i, r in enumerate(records) if r["role"] == "user"]
        start = users[-turns] if len(users) >= turns else 0
        for r in records[start:]:
            if r["role"] == "user":
                self.console.print(Text("» ", style="green") + Text(r["content"], style="dim"))
            elif r["role"] == "assistant":
                self.console.print(Text(r["content"] or "(empty reply)", style="dim"))
                if r.get("interrupted"):
                    self.console.print(Text("[interrupted]", style="dim yellow"))
        if records:
            self.console.print()

    # ---- a reply ------------------------------------------------------------------------------
    def reply(self, events: Iterable[Any], *, stopping: Callable[[], bool] = lambda: False,
              searching: bool = False) -> Done:
        """Show ``events`` live (reply tail, search view, status line), then the reply as Markdown.

        The live part is transient: when the reply ends it is replaced by the rendered reply.
        A KeyboardInterrupt (second Ctrl-C) leaves ``self.state`` with what was committed."""
        state = self.state = ReplyState(searching=searching)

        def render() -> RenderableType:
            return self._live(state, stopping())

        with Live(get_renderable=render, console=self.console, transient=True, refresh_per_second=10,
                  redirect_stdout=False, redirect_stderr=True):
            for ev in events:
                state.feed(ev)
        assert state.done is not None, "a decoding strategy must finish with Done"
        self.final(state.done)
        return state.done

    def final(self, done: Done) -> None:
        text = done.text.strip("\n")
        if text.strip():
            self.console.print(Markdown(keep_line_breaks(text)))
        else:
            self.console.print(Text("(empty reply)", style="dim"))
        if done.stop_reason == "interrupted":
            self.console.print(Text("[interrupted]", style="yellow"))
        elif done.stop_reason == "length":
            self.console.print(Text("[length limit: /set max_tokens N for longer replies]", style="dim"))
        elif done.stop_reason == "judge":
            self.console.print(Text("[stopped: the search found no continuation its judge accepts]", style="yellow"))
        if self.show_search and self.state is not None and self.state.rejected:
            self.console.print(self.rejected_clauses(self.state.rejected))
        if self.show_search and self.state is not None and self.state.commits:
            self.console.print(self.rejected_table(self.state.commits))
        self.console.print()

    def partial(self, text: str) -> None:
        """What was committed when a second Ctrl-C ended the session."""
        if text.strip():
            self.console.print(Text(text.strip("\n")))
        self.console.print(Text("[interrupted]", style="yellow"))

    def _live(self, s: ReplyState, stopping: bool) -> RenderableType:
        width = max(20, self.console.width)
        height = max(6, self.console.height)
        parts: list[RenderableType] = []
        search = self._search_table(s) if self.show_search and s.candidates and s.activity in (None, "searching") else None
        reserved = 2 + (min(len(s.candidates), SEARCH_ROWS) + 2 if search is not None else 0)
        room = max(1, height - reserved - 1)
        if s.text:
            lines = Text(s.text).wrap(self.console, width)
            tail = list(lines)[-room:]
            parts.append(Text("\n").join(tail))
        if search is not None:
            parts.append(search)
        parts.append(Spinner("dots", text=self._status(s, stopping), style="cyan"))
        return Group(*parts)

    def _status(self, s: ReplyState, stopping: bool) -> Text:
        t = s.elapsed
        bits: list[str] = []
        if s.activity is not None:
            what = {"searching": "searching after a rejected clause"}.get(s.activity, s.activity)
            bits.append(what)
            bits.append(f"clauses checked {s.checks}")
            bits.append(f"rewinds {s.rewinds}")
            if s.activity == "searching":
                bits.append(f"searches {s.searches}")
            elif s.last_check is not None:
                bits.append(f"last check {s.last_check.score:+.2f}")
        elif s.searching or s.searches or s.evaluations:
            bits.append(f"searches {s.searches}")
            bits.append(f"evaluations {s.evaluations}")
            if s.best_value is not None:
                bits.append(f"best {s.best_value:+.2f}")
        bits.append(f"{s.tokens} tokens")
        bits.append(f"{s.tokens / t:.1f} tok/s" if t > 0 else "- tok/s")
        bits.append(f"{t:.1f}s")
        status = Text(" · ".join(bits), style="dim")
        if stopping:
            status.append("  stopping… (Ctrl-C again to quit)", style="yellow")
        else:
            status.append("  Ctrl-C stops", style="dim")
        return status

    def _search_table(self, s: ReplyState) -> Table:
        tail = s.text[-30:].replace("\n", "⏎")
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="dim", padding=(0, 1),
                      title=Text(f"branches after …{tail}" if tail else "branches at the start", style="dim"),
                      title_justify="left")
        table.add_column("", width=1)
        table.add_column("candidate", max_width=32, no_wrap=True)
        table.add_column("prior", justify="right")
        table.add_column("visits", justify="right")
        table.add_column("value", justify="right")
        ranked = _ranked(s.candidates)
        for i, c in enumerate(ranked[:SEARCH_ROWS]):
            style = "bold" if i == 0 and c.n > 0 else ("" if c.n > 0 else "dim")
            value = Text(f"{c.q:+.2f}", style=("green" if c.q > 0 else "red") if c.n > 0 else "dim")
            table.add_row("▶" if i == 0 and c.n > 0 else "", Text(branch_text(c.text), style=style),
                          f"{c.p:.2f}", f"{c.n:.1f}", value)
        if len(ranked) > SEARCH_ROWS:
            table.add_row("", Text(f"+{len(ranked) - SEARCH_ROWS} more", style="dim"), "", "", "")
        return table

    def rejected_clauses(self, checks: list[Check]) -> Group:
        """After a fast-profile reply: every drafted clause the judge rejected, with its score. (The title is
        a line of its own: as a table title it wrapped to the width of a table of short clauses.)"""
        table = Table(box=None, header_style="dim", padding=(0, 1), show_edge=False)
        table.add_column("score", justify="right")
        table.add_column("rejected clause", overflow="fold")
        for c in checks:
            table.add_row(Text(f"{c.score:+.2f}", style="red"), Text(branch_text(c.text, 60), style="red"))
        return Group(Text("clauses the judge rejected (the search replaced them)", style="dim"), table)

    def rejected_table(self, commits: list[CommitPoint], limit: int = 3) -> Table:
        """After the reply: at each commit, what RAIN kept and the visited branches it rejected."""
        table = Table(title=Text("what the search kept and rejected", style="dim"), title_justify="left",
                      box=None, header_style="dim", padding=(0, 1), show_edge=False)
        table.add_column("after", style="dim", max_width=24, no_wrap=True)
        table.add_column("kept", no_wrap=True)
        table.add_column("rejected (value, visits)", overflow="fold")
        for cp in commits:
            after = cp.after[-22:].replace("\n", "⏎")
            after = ("…" + after) if len(cp.after) > 22 else (after or "(start)")
            kept = Text(branch_text(cp.kept.text, 20), style="green")
            kept.append(f" {cp.kept.q:+.2f} ×{cp.kept.n:.0f}", style="dim")
            seen = [c for c in cp.rejected if c.n > 0]
            rej = Text()
            for i, c in enumerate(seen[:limit]):
                if i:
                    rej.append(" · ", style="dim")
                rej.append(branch_text(c.text, 18), style="red")
                rej.append(f" {c.q:+.2f} ×{c.n:.0f}", style="dim")
            if len(seen) > limit:
                rej.append(f" · +{len(seen) - limit} more", style="dim")
            if not seen:
                rej.append("(no other branch visited)", style="dim")
            table.add_row(after, kept, rej)
        return table

    # ---- /stats -------------------------------------------------------------------------------
    def stats(self, done: Done, settings: dict[str, Any]) -> None:
        self.console.print(stats_table(done, settings))
        self.console.print()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if math.isfinite(v) else "-"
    if isinstance(v, dict):
        return " · ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


#: Search statistics in the order /stats shows them, with their labels.
STAT_LABELS = [
    ("openings", "openings judged"), ("drafts", "clauses drafted"), ("accepted", "clauses accepted"),
    ("held", "clauses held back"), ("rejected", "clauses rejected"), ("rewinds_further", "rewinds further back"),
    ("searches", "searches"), ("evaluations", "evaluations"), ("cache_hits", "cached evaluations"),
    ("commits", "commits"), ("rewinds", "rewinds"), ("early_stops", "early stops"),
    ("nodes_added", "nodes added"), ("similarity_updates", "similarity updates"), ("embeddings", "embeddings"),
]


def stats_table(done: Done, settings: dict[str, Any]) -> Table:
    st = dict(done.stats)
    table = Table(box=None, show_header=False, padding=(0, 2), title=Text("last reply", style="bold"),
                  title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    mode = settings.get("mode", "?")
    if mode == "rain":
        mode += f" (objective {settings.get('objective')}, T={settings.get('rain', {}).get('T')})"
    table.add_row("mode", mode)
    table.add_row("stop reason", done.stop_reason)
    usage = st.pop("usage", {}) or {}
    timings = st.pop("timings", {}) or {}
    table.add_row("answer tokens", str(usage.get("completion_tokens", st.get("answer_tokens", len(done.tokens)))))
    if usage.get("prompt_tokens") is not None:
        table.add_row("prompt tokens", str(usage["prompt_tokens"]))
    if timings:
        table.add_row("time", f"{_fmt(timings.get('total_s'))} s (first commit after {_fmt(timings.get('first_commit_s'))} s)")
        if timings.get("tokens_per_s") is not None:
            table.add_row("answer tokens/s", _fmt(timings["tokens_per_s"]))
    for key, label in STAT_LABELS:
        if key in st:
            table.add_row(label, _fmt(st[key]))
    decoded = {k: v for k, v in (st.get("tokens_decoded") or {}).items() if v}
    if decoded:
        table.add_row("tokens decoded", _fmt(decoded))
    phases = {k: v for k, v in (st.get("time") or {}).items() if k != "wall" and v}
    if phases:
        table.add_row("time by phase (s)", _fmt({k: round(v, 2) for k, v in phases.items()}))
    return table
