"""The pull display every command uses: a rich progress bar on stderr when it is a terminal, else one line."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from rainlocal.catalog.entries import ModelEntry, describe_source, format_size
from rainlocal.catalog.transfer import PullReporter


class StderrReporter(PullReporter):
    """A pull's progress on stderr.

    ``quiet`` hides the bar and the line but not warnings (an unverified download must not go unnoticed).
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._progress: Any = None
        self._task: Any = None
        self._sub: Any = None

    def start(self, entry: ModelEntry) -> None:
        if self.quiet:
            return
        self.console.print(
            f"pulling {entry.alias} ({format_size(entry.size)}) from {describe_source(entry)}", markup=False
        )
        if not self.console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task(entry.alias, total=entry.size)
        self._progress.start()

    def set_total(self, total: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def advance(self, nbytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, nbytes)

    def fetching(self, label: str, done: int, total: int | None) -> None:
        if self._progress is None:
            return
        if len(label) > 32:
            label = label[:31] + "…"
        if self._sub is None:
            self._sub = self._progress.add_task(label, total=total)
        self._progress.update(self._sub, description=f"  {label}", completed=done, total=total)

    def warn(self, message: str) -> None:
        self.console.print(f"rainlocal: warning: {message}", markup=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
