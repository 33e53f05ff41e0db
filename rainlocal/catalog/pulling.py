"""Pulling a catalogue model into the models directory, and checking it before it counts as pulled.

Whatever the source, the bytes go to ``<file>.part`` in the models directory while being hashed;
size, sha256 and the GGUF magic are checked, and only then is the file renamed into place. So a file
under its final name is always complete and verified, and once it is there nothing here touches the
network again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rainlocal.catalog import pypi_source, url_source
from rainlocal.catalog.entries import ModelEntry, entry_path, load_catalog
from rainlocal.catalog.transfer import PullReporter
from rainlocal.errors import DownloadError

_FETCHERS = {"url": url_source.fetch, "pypi": pypi_source.fetch}


def default_reporter(quiet: bool) -> PullReporter:
    """What a caller that gives no reporter sees: the stderr display (``quiet`` keeps only warnings).

    The display lives in ``rainlocal.ui`` and is imported only here, when no reporter is given, so
    the catalogue itself renders nothing and a library caller can pass its own (``PullReporter()``
    shows nothing at all).
    """
    from rainlocal.ui.pull_progress import StderrReporter

    return StderrReporter(quiet=quiet)


def pull(alias: str, *, quiet: bool = False, force: bool = False, reporter: PullReporter | None = None) -> Path:
    """Make sure the model ``alias`` is in the models directory and return its path.

    An already pulled model is returned as it is (no network) unless ``force``; with ``force`` the old
    file stays in place until the new download has been verified.
    """
    entry = load_catalog().get(alias)
    return pull_entry(entry, force=force, reporter=reporter or default_reporter(quiet))


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def remove(alias: str) -> bool:
    """Delete a pulled model (and any partial download); False when there was nothing to delete."""
    target = entry_path(load_catalog().get(alias))
    removed = False
    for p in (target, part_path(target)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed = True
    return removed


def pull_entry(entry: ModelEntry, *, force: bool, reporter: PullReporter) -> Path:
    target = entry_path(entry)
    if target.is_file() and not force:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the models directory {target.parent}: {e.strerror or e}") from None
    part = part_path(target)
    if entry.sha256 is None:
        reporter.warn(f"model '{entry.alias}' has no sha256 in the catalogue: the downloaded file is unverified")
    reporter.start(entry)
    try:
        digest, size = _FETCHERS[entry.source_type](entry, part, reporter)
    finally:
        reporter.stop()
    verify(entry, part, digest, size)
    try:
        os.replace(part, target)
    except OSError as e:
        raise DownloadError(f"cannot move {part.name} into place: {e.strerror or e}") from None
    return target


def verify(entry: ModelEntry, part: Path, digest: str, size: int) -> None:
    """Reject a download that differs from the catalogue, deleting it so nothing wrong stays behind."""
    if entry.source_type == "url" and entry.size is not None and size < entry.size:
        # The server stopped early: keep the .part so that the next pull resumes it.
        raise DownloadError(
            f"download of '{entry.alias}' stopped at {size} of {entry.size} bytes; run the pull again to resume"
        )
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"size mismatch for '{entry.alias}': expected {entry.size} bytes, got {size}"
    elif entry.sha256 is not None and digest != entry.sha256:
        problem = f"checksum mismatch for '{entry.alias}': expected sha256 {entry.sha256}, got {digest}"
    else:
        with open(part, "rb") as f:
            if f.read(4) != b"GGUF":
                problem = f"the download of '{entry.alias}' is not a GGUF file"
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{problem}; the download was discarded")
