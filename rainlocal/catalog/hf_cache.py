"""``hf:OWNER/REPO[:FILE_OR_QUANT]``: a GGUF file already in the Hugging Face hub cache, used offline.

The cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) keeps each
model repository in ``models--OWNER--REPO/``: ``refs/main`` holds the commit the ``main`` branch
pointed at when last downloaded, ``snapshots/<commit>/`` holds the repository's files as symlinks
into ``blobs/``. Reading that layout takes a few lines, so huggingface_hub is not needed; nothing is
downloaded and nothing in the cache is written.

The snapshot path (not the blob it links to) is what llama.cpp is given: it keeps the file's real
name, and a split model's later parts sit beside its first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rainlocal.catalog.entries import StoredModel
from rainlocal.errors import ModelError, UsageError

PREFIX = "hf:"

_QUANT_RE = re.compile(r"[-._]((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?:-\d{5}-of-\d{5})?\.gguf$", re.IGNORECASE)
_SPLIT_RE = re.compile(r"-(\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def root() -> Path:
    """The hub cache directory, as huggingface_hub chooses it."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def quant_of(filename: str) -> str | None:
    """The quantization a GGUF file name states (``...-Q4_K_M.gguf`` -> ``Q4_K_M``), if any."""
    match = _QUANT_RE.search(filename)
    return match.group(1) if match else None


def _parse(ref: str) -> tuple[str, str, str | None]:
    body = ref[len(PREFIX):]
    repo_id, _, spec = body.partition(":")
    owner, slash, repo = repo_id.partition("/")
    if not slash or not _REPO_PART_RE.match(owner) or not _REPO_PART_RE.match(repo) or ".." in repo_id:
        raise UsageError(f"bad Hugging Face model '{ref}': expected hf:OWNER/REPO[:FILE_OR_QUANT], "
                         "e.g. hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M")
    return owner, repo, spec or None


def _repo_dir(cache: Path, owner: str, repo: str) -> Path | None:
    """The repository's folder; the hub's repository names are case-insensitive, so is this lookup."""
    exact = cache / f"models--{owner}--{repo}"
    if exact.is_dir():
        return exact
    wanted = exact.name.lower()
    if cache.is_dir():
        for candidate in cache.iterdir():
            if candidate.name.lower() == wanted and candidate.is_dir():
                return candidate
    return None


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot of ``main`` (``refs/main``); without that ref, the only snapshot if there is one."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
        return snapshot if snapshot.is_dir() else None
    snapshots = [p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()]
    return snapshots[0] if len(snapshots) == 1 else None


def _model_files(snapshot: Path) -> list[str]:
    """The snapshot's GGUF models (relative paths): a split model by its first part, no vision projectors."""
    files = []
    for path in sorted(snapshot.rglob("*.gguf")):
        name = path.name
        split = _SPLIT_RE.search(name)
        if (split and int(split.group(1)) != 1) or name.lower().startswith("mmproj") or not path.is_file():
            continue  # later split parts, projectors, and links whose blob was deleted
        files.append(path.relative_to(snapshot).as_posix())
    return files


def _labels(files: list[str]) -> dict[str, str]:
    """How to ask for each file: its quantization when that names it alone, else its path."""
    quants = [quant_of(Path(f).name) for f in files]
    return {
        f: q if q is not None and sum(1 for other in quants if other and other.lower() == q.lower()) == 1 else f
        for f, q in zip(files, quants)
    }


def _pick(ref_base: str, files: list[str], spec: str | None) -> str:
    labels = _labels(files)
    if spec is None:
        matches = files
    elif spec.lower().endswith(".gguf"):
        matches = [f for f in files if f == spec] or [f for f in files if Path(f).name == spec]
    else:
        matches = [f for f in files if (quant_of(Path(f).name) or "").lower() == spec.lower()]
    if len(matches) == 1:
        return matches[0]
    choices = ", ".join(f"{ref_base}:{labels[f]}" for f in (matches or files))
    if not matches:
        wanted = f" matching '{spec}'" if spec else ""
        raise ModelError(f"{ref_base} has no GGUF file{wanted} in the cache (files: {choices or 'none'})")
    raise UsageError(f"{ref_base} has {len(matches)} GGUF files{f' matching {spec!r}' if spec else ''}; choose one: {choices}")


def resolve(ref: str) -> Path:
    """The cached file ``ref`` names; a repository that is not cached says where it looked."""
    owner, repo, spec = _parse(ref)
    cache = root()
    ref_base = f"{PREFIX}{owner}/{repo}"
    repo_dir = _repo_dir(cache, owner, repo)
    if repo_dir is None:
        raise ModelError(
            f"{ref_base} is not in the Hugging Face cache: no models--{owner}--{repo} in {cache} "
            "(set HF_HUB_CACHE or HF_HOME for another cache)"
        )
    snapshot = _snapshot(repo_dir)
    if snapshot is None:
        raise ModelError(f"{ref_base}: no snapshot of main in {repo_dir} (refs/main missing or pointing nowhere)")
    return snapshot / _pick(ref_base, _model_files(snapshot), spec)


def find_all() -> list[StoredModel]:
    """Every GGUF model in the cache's snapshots of ``main``, with the name that selects it."""
    cache = root()
    if not cache.is_dir():
        return []
    found = []
    for repo_dir in sorted(cache.glob("models--*--*")):
        _, owner, repo = repo_dir.name.split("--", 2)
        snapshot = _snapshot(repo_dir)
        files = _model_files(snapshot) if snapshot is not None else []
        labels = _labels(files)
        for f in files:
            name = f"{PREFIX}{owner}/{repo}" + ("" if len(files) == 1 else f":{labels[f]}")
            path = snapshot / f
            found.append(StoredModel(name=name, path=path, size=path.stat().st_size, store="hf"))
    return found
