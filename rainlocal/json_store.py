"""Small JSON dictionaries in the cache directory: a measurement remembered by key (the judge signal check
per judge file, a first-use fit's projected time per model file).

Read tolerantly (a missing, torn or foreign file is an empty dictionary) and replaced atomically, so two
processes never see half a file; a cache that cannot be written only means the measurement is made again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_dict(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(path: Path, key: str, value: Any) -> None:
    """Set ``key`` in the dictionary at ``path`` (the other keys kept)."""
    path = Path(path)
    data = read_dict(path)
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
