"""JSONL files: reading the ones users hand us (batch prompts, HH-format data), where every problem is
a UsageError naming the file and line, and the append-only logs rainlocal writes (batch answers, eval
results, conversations), where each record is on disk when its append returns and a line torn by a
kill mid-write is cut off before the next append."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

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


def append_records(f: IO[str], records: Iterable[Any]) -> None:
    """Append ``records`` as JSON lines in one write, then flush and fsync (on disk when this returns)."""
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


def read_log(path: Path, *, repair: bool = True) -> list[Any]:
    """The records of an append-only JSONL log, up to the first line that a kill mid-write left torn
    (no newline, or not JSON); with ``repair`` that line and everything after it are cut off, so the
    next append starts on a clean line. A missing file has no records."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[Any] = []
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
        good += len(line)
    if repair and good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a write cut short by a crash) before appending."""
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)
