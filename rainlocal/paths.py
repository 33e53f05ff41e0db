"""Where rainlocal keeps its files.

platformdirs gives each OS its usual places; ``RAINLOCAL_HOME`` puts everything (config, data,
cache) under one directory instead, which is what tests and portable installs want.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "rainlocal"


def _home() -> Path | None:
    value = os.environ.get("RAINLOCAL_HOME")
    return Path(value).expanduser().resolve() if value else None


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP))


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP))


def models_dir() -> Path:
    """Pulled model files (large; kept in the data directory, not the cache, so they survive cleaners)."""
    return data_dir() / "models"


def config_file() -> Path:
    return config_dir() / "config.toml"


def user_catalog_file() -> Path:
    return config_dir() / "models.toml"


def conversations_dir() -> Path:
    return data_dir() / "conversations"
