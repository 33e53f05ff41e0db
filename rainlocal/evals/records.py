"""The results file of an evaluation: complete JSON lines, appended whole and fsynced.

Several worker processes (``eval --jobs N``) append to the same file, so every record is written
with one ``write`` on a descriptor opened with ``O_APPEND`` under an exclusive ``flock``: lines
never interleave, and a process killed mid-write leaves at most one torn last line, which the
reader cuts off. The reader cuts off everything after a torn line too, so a worker that ends itself
from another thread (``os._exit`` in ``rainlocal.cli.eval_jobs``) first takes ``WRITING``: it never
leaves a torn line that other workers would append after.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from rainlocal.jsonl import read_log

#: Held while this process writes a record: whoever ends the process with ``os._exit`` takes it first.
WRITING = threading.Lock()


def unit_key(rec: dict[str, Any]) -> tuple[str, str, str, int]:
    """What a result is the result of: its kind, id, strategy and sample (records written before
    ``--samples`` existed have none: they are sample 0)."""
    return (str(rec.get("kind")), str(rec.get("id")), str(rec.get("system", "")), int(rec.get("sample") or 0))


def read_records(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Every complete record of ``path``; a torn last line (killed mid-write) is cut off (``repair``)."""
    return [r for r in read_log(path, repair=repair) if isinstance(r, dict)]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, atomically with respect to other appending processes."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: O_APPEND alone
            pass
        with WRITING:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
