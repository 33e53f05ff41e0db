"""Reading the JSONL files users hand us (batch prompts, HH-format data): every problem is a
UsageError naming the file and line, so a bad line never turns into a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from rainlocal.errors import UsageError

ROLES = ("system", "user", "assistant")


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise UsageError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None


def conversation(obj: Any, where: str) -> list[dict[str, str]]:
    """The conversation of a line: its ``messages`` list, or one user turn from ``prompt``."""
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and msgs is None and isinstance(obj.get("prompt"), str):
        msgs = [{"role": "user", "content": obj["prompt"]}]
    if (not isinstance(msgs, list) or not msgs
            or not all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                       for m in msgs)):
        raise UsageError(f'{where}: each line needs "prompt" or "messages": [{{"role", "content"}}, ...]')
    return [{"role": m["role"], "content": m["content"]} for m in msgs]
