"""User configuration: ``config.toml`` in the config directory.

Tables: ``[defaults]`` (model, ctx_size, gpu_layers, threads, temp, top_p, top_k, seed,
max_tokens, system, chat_format, objective, profile) and ``[rain]`` (any RAIN search constant,
by the field names of ``rainlocal.search.settings.RainSettings``). Command-line flags win over the
file; the file wins over built-in defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rainlocal import paths
from rainlocal.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a ConfigError that names the file and line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def load_user_config(path: Path | None = None) -> dict[str, Any]:
    """The user's config.toml as a dict (empty when there is none)."""
    path = path or paths.config_file()
    if not path.exists():
        return {}
    data = read_toml(path)
    for table in ("defaults", "rain"):
        if table in data and not isinstance(data[table], dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
    return data
