"""``ollama:NAME[:TAG]``: a model pulled by ollama, used in place from ollama's store (read-only).

ollama keeps OCI-style manifests under ``manifests/<host>/<namespace>/<name>/<tag>`` (``ollama pull
smollm2:135m`` writes ``manifests/registry.ollama.ai/library/smollm2/135m``) and content-addressed
blobs under ``blobs/sha256-<hex>``. The manifest's layer with media type
``application/vnd.ollama.image.model`` is the GGUF file itself, so llama.cpp can open the blob
directly: nothing is copied, and nothing here ever writes to the store.

The store is ``$OLLAMA_MODELS``, else ``~/.ollama/models`` (and, on Linux, the system service's
``/usr/share/ollama/.ollama/models``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rainlocal.catalog.entries import StoredModel
from rainlocal.errors import ModelError, UsageError

PREFIX = "ollama:"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


def roots() -> list[Path]:
    """The stores to look in, in order."""
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return [Path(env).expanduser()]
    found = [Path.home() / ".ollama" / "models"]
    if sys.platform.startswith("linux"):
        found.append(Path("/usr/share/ollama/.ollama/models"))
    return found


def _where() -> str:
    places = " or ".join(str(r) for r in roots())
    hint = "" if os.environ.get("OLLAMA_MODELS") else "; set OLLAMA_MODELS for another store"
    return f"{places}{hint}"


def _parse(ref: str) -> tuple[str, str, str, str]:
    """``ollama:NAME[:TAG]`` -> (host, namespace, name, tag), with ollama's defaults filled in."""
    body = ref[len(PREFIX):]
    name, tag = body, DEFAULT_TAG
    if ":" in body and "/" not in body.rsplit(":", 1)[1]:
        name, tag = body.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_HOST, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_HOST, *parts]
    if len(parts) != 3 or not tag or any(not p or p in (".", "..") or "\\" in p for p in (*parts, tag)):
        raise UsageError(f"bad ollama model name '{ref}': expected ollama:NAME[:TAG], e.g. ollama:smollm2:135m")
    return parts[0], parts[1], parts[2], tag


def short_name(host: str, namespace: str, name: str, tag: str) -> str:
    """The name as ollama shows it: default host and namespace left out."""
    if host == DEFAULT_HOST:
        full = name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"
    else:
        full = f"{host}/{namespace}/{name}"
    return f"{PREFIX}{full}:{tag}"


def _model_blob(root: Path, manifest: Path, label: str) -> tuple[Path, int]:
    """The GGUF blob a manifest points at, and its size; a broken manifest or a missing blob is a ModelError."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data["layers"]
        layer = next(x for x in layers if x.get("mediaType") == MODEL_MEDIA_TYPE)
    except StopIteration:
        raise ModelError(f"ollama model '{label}' has no model layer ({MODEL_MEDIA_TYPE}) in {manifest}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"cannot read the ollama manifest {manifest}: {e}") from None
    digest = str(layer.get("digest", ""))
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or not hexdigest.isalnum():
        raise ModelError(f"ollama model '{label}': unexpected layer digest {digest!r} in {manifest}")
    blob = root / "blobs" / f"sha256-{hexdigest}"
    if not blob.is_file():
        raise ModelError(f"ollama model '{label}': its model blob {blob} is missing (run: ollama pull {label})")
    size = blob.stat().st_size
    expected = layer.get("size")
    if isinstance(expected, int) and expected != size:
        raise ModelError(f"ollama model '{label}': blob {blob} has {size} bytes, its manifest says {expected}")
    return blob, size


def resolve(ref: str) -> Path:
    """The GGUF blob of ``ollama:NAME[:TAG]``; a model that is not there says where it looked."""
    host, namespace, name, tag = _parse(ref)
    label = short_name(host, namespace, name, tag)[len(PREFIX):]
    for root in roots():
        for candidate in (name, name.lower()):
            manifest = root / "manifests" / host / namespace / candidate / tag
            if manifest.is_file():
                return _model_blob(root, manifest, label)[0]
    relative = Path("manifests", host, namespace, name, tag)
    raise ModelError(f"ollama model '{label}' not found: no {relative} in {_where()}")


def find_all() -> list[StoredModel]:
    """Every model in the ollama store(s) whose blob is present, by name."""
    found: dict[str, StoredModel] = {}
    for root in roots():
        manifests = root / "manifests"
        if not manifests.is_dir():
            continue
        for manifest in sorted(manifests.glob("*/*/*/*")):
            if not manifest.is_file():
                continue
            host, namespace, name, tag = manifest.relative_to(manifests).parts
            label = short_name(host, namespace, name, tag)
            if label in found:
                continue
            try:
                blob, size = _model_blob(root, manifest, label[len(PREFIX):])
            except ModelError:
                continue  # half-pulled or not a GGUF model: nothing -m could use
            found[label] = StoredModel(name=label, path=blob, size=size, store="ollama")
    return list(found.values())
