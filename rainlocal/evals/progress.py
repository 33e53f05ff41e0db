"""Progress of an evaluation on stderr: per-strategy counts and an ETA.

Fed one finished unit at a time, by the runner in-process or, with ``eval --jobs N``, by the parent
watching the shared results file (then ``parallel`` is N: the remaining work is shared by N workers).
On a terminal a rich bar; otherwise one plain line per unit.
"""

from __future__ import annotations

from typing import Iterable


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts per kind of unit (a strategy name, "check", "self_check") and an ETA from the mean time of
    finished units of each kind."""

    def __init__(self, kinds: Iterable[str], done_kinds: Iterable[str], console, *, parallel: int = 1) -> None:
        self.totals: dict[str, int] = {}
        for k in kinds:
            self.totals[k] = self.totals.get(k, 0) + 1
        self.counts = {k: 0 for k in self.totals}
        for k in done_kinds:
            if k in self.counts:
                self.counts[k] += 1
        self.console = console
        self.parallel = max(1, parallel)
        self.times: dict[str, list[float]] = {}
        self._bar = None
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[eta]}"), console=console, transient=False)
            self._task = self._bar.add_task("evaluating", total=self.total, completed=self.done, eta="ETA --")

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def eta(self) -> tuple[float, bool] | None:
        """Remaining seconds (each remaining unit at the mean time of its kind, over the workers) and
        whether that is only a lower bound: a kind not timed yet (a RAIN strategy can take 30x a
        vanilla answer) is counted as nothing rather than guessed from the others."""
        if not self.times:
            return None
        est, untimed = 0.0, False
        for kind, total in self.totals.items():
            ts = self.times.get(kind)
            left = total - self.counts[kind]
            if ts:
                est += left * sum(ts) / len(ts)
            elif left > 0:
                untimed = True
        return est / self.parallel, untimed

    def counts_text(self) -> str:
        return " · ".join(f"{k} {self.counts[k]}/{t}" for k, t in self.totals.items())

    def start(self, label: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def finish(self, kind: str, seconds: float, label: str) -> None:
        if kind in self.counts:
            self.counts[kind] += 1
        self.times.setdefault(kind, []).append(seconds)
        eta = self.eta()
        eta_text = "ETA --" if eta is None else f"ETA {'>' if eta[1] else ''}{fmt_seconds(eta[0])}"
        if self._bar is not None:
            self._bar.update(self._task, advance=1, eta=eta_text, description=self.counts_text())
        else:
            self.console.print(f"[{self.done}/{self.total}] {label} ({seconds:.1f} s) | {self.counts_text()} | {eta_text}",
                               markup=False, highlight=False, soft_wrap=True)
