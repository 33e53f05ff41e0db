"""What a ``--model`` argument means: a file, a model in another program's store, or a catalogue alias."""

from __future__ import annotations

import os
from pathlib import Path

from rainlocal.catalog import hf_cache, ollama_store
from rainlocal.catalog.entries import StoredModel, entry_path, load_catalog
from rainlocal.catalog.pulling import default_reporter, pull_entry
from rainlocal.catalog.transfer import PullReporter
from rainlocal.errors import ModelError, UsageError

STORES = {ollama_store.PREFIX: ollama_store, hf_cache.PREFIX: hf_cache}


def model_path(alias: str) -> Path:
    """Where the model ``alias`` lives (or will live once pulled)."""
    return entry_path(load_catalog().get(alias))


def store_of(arg: str):
    """The store module for an ``ollama:`` or ``hf:`` reference, else None."""
    return next((store for prefix, store in STORES.items() if arg.startswith(prefix)), None)


def model_label(spec: str | None, path: Path) -> str:
    """How records and banners name a model: an ``ollama:``/``hf:`` reference as the user gave it (its
    file is a content-addressed blob whose name says nothing), anything else by its file's name."""
    return spec if spec and store_of(spec) is not None else path.name


def find_stored() -> list[StoredModel]:
    """Every usable model in the ollama store and the Hugging Face cache (``models list --all``)."""
    return [model for store in STORES.values() for model in store.find_all()]


def _looks_like_path(arg: str) -> bool:
    separators = [os.sep, "/"] + ([os.altsep] if os.altsep else [])
    return any(s in arg for s in separators) or arg.lower().endswith(".gguf") or arg.startswith("~")


def resolve_model(
    arg: str | None, *, pull: bool = True, quiet: bool = False, reporter: PullReporter | None = None
) -> Path:
    """Turn a ``--model`` value into a model file.

    ``None`` means the catalogue default; an existing file is used as it is; ``ollama:NAME[:TAG]``
    and ``hf:OWNER/REPO[:FILE_OR_QUANT]`` are looked up, offline and read-only, in those programs'
    stores; something shaped like a path that does not exist is an error (never mistaken for an
    alias); an alias gives its pulled file, pulling it first when missing and ``pull`` is true
    (progress to ``reporter``, by default the stderr display). A pulled file is returned without any
    network access, so everything works offline after the first pull.
    """
    if arg is not None:
        candidate = Path(arg).expanduser()
        if candidate.is_file():
            return candidate.resolve()
        store = store_of(arg)
        if store is not None:
            return store.resolve(arg)
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
    return pull_entry(entry, force=False, reporter=reporter or default_reporter(quiet))


def refuse_store_reference(arg: str, action: str) -> None:
    """``models pull|rm`` act on the catalogue only: another program's store is read-only here."""
    if store_of(arg) is not None:
        owner = "ollama" if arg.startswith(ollama_store.PREFIX) else "the Hugging Face cache"
        raise UsageError(f"rainlocal does not {action} models in {owner}: '{arg}' is used in place, read-only")
