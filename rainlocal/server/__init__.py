"""``rainlocal serve``: the OpenAI API in front of the same answering code ``rainlocal run`` uses.

``protocol`` (request bodies and the OpenAI error shape), ``translate`` (a request -> the settings of one
answer), ``worker`` (one engine thread, a fair queue, cancellation), ``shapes`` (response bodies) and
``app`` (the Starlette routes). Everything here but ``missing_extra`` needs ``pip install ".[server]"``.
"""

from __future__ import annotations

import importlib.util

#: The modules of the ``server`` extra, by import name.
EXTRA_MODULES = ("starlette", "uvicorn", "sse_starlette", "pydantic")

INSTALL_HINT = 'rainlocal serve needs the server extra: pip install "rainlocal[server]" (or ".[server]" in a checkout)'


def missing_extra() -> str | None:
    """The first module of the server extra that cannot be imported, or None when all are there."""
    for name in EXTRA_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a module set to None in sys.modules raises ValueError
            return name
    return None
