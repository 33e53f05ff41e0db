"""Saved chat conversations: one JSONL file per conversation in ``paths.conversations_dir()``.

File layout (one JSON object per line, appended, never rewritten)::

    {"type": "header", "format": "rainlocal-conversation", "version": 1, "id": "...",
     "created": "2025-01-01T12:00:00+00:00", "model": "x.gguf", "model_path": "/.../x.gguf",
     "settings": {...}, "system": "..." | null}
    {"type": "message", "role": "user", "content": "...", "time": "..."}
    {"type": "message", "role": "assistant", "content": "...", "time": "...", "stop_reason": "length",
     "interrupted": false, "settings": {...}, "stats": {...}}
    {"type": "system", "content": "..." | null, "time": "..."}       # /system changed the prompt

An assistant line with ``"regenerated": true`` replaces the assistant reply before it (``/regen``).
The file is created with the first turn (an empty session leaves nothing behind) and every turn is
written in one ``write`` followed by flush and fsync, so a crash loses at most the reply in progress.
A torn last line (the process died mid-write) is ignored when reading and cut off before appending.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rainlocal import paths
from rainlocal.errors import RainlocalError, UsageError
from rainlocal.jsonl import append_records, cut_torn_tail

FORMAT = "rainlocal-conversation"
VERSION = 1
SUFFIX = ".jsonl"


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def new_id() -> str:
    """Sortable and short: local date and time plus four random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass
class Conversation:
    """A conversation in memory and (after its first turn) on disk."""

    id: str
    model: str = ""
    model_path: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    created: str = field(default_factory=now_iso)
    #: Every message in order: user/assistant messages and ``system`` changes, with their metadata.
    records: list[dict[str, Any]] = field(default_factory=list)
    directory: Path | None = None
    #: The system prompt in the header (``system`` is the current one, after any ``/system``).
    initial_system: str | None = None

    # ---- where it lives ----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return (self.directory or paths.conversations_dir()) / f"{self.id}{SUFFIX}"

    @property
    def persisted(self) -> bool:
        return self.path.exists()

    # ---- what the model sees -----------------------------------------------------------------
    def context(self) -> list[dict[str, str]]:
        """Earlier user/assistant messages as the chat formatter wants them (no metadata)."""
        return [{"role": r["role"], "content": r["content"]} for r in self.records if r["role"] in ("user", "assistant")]

    @property
    def turns(self) -> int:
        return sum(1 for r in self.records if r["role"] == "user")

    def last_assistant(self) -> dict[str, Any] | None:
        for r in reversed(self.records):
            if r["role"] == "assistant":
                return r
            if r["role"] == "user":
                return None
        return None

    def last_user(self) -> dict[str, Any] | None:
        for r in reversed(self.records):
            if r["role"] == "user":
                return r
        return None

    def title(self, width: int = 60) -> str:
        first = next((r["content"] for r in self.records if r["role"] == "user"), "")
        line = " ".join(first.split())
        return line if len(line) <= width else line[: width - 1] + "…"

    # ---- changes (each one is on disk before the call returns) --------------------------------
    def add_turn(self, user: str | None, reply: dict[str, Any]) -> None:
        """Record a finished (or interrupted) turn. ``user=None`` with ``reply["regenerated"]``
        replaces the last reply (``/regen``)."""
        stamp = now_iso()
        lines: list[dict[str, Any]] = []
        if user is not None:
            lines.append({"type": "message", "role": "user", "content": user, "time": stamp})
        lines.append({"type": "message", "role": "assistant", "time": stamp, **reply})
        self._append(lines)
        for line in lines:
            self._apply(line)

    def set_system(self, text: str | None) -> None:
        if not self.persisted:
            self.system = text  # goes into the header with the first turn
            return
        line = {"type": "system", "content": text, "time": now_iso()}
        self._append([line])
        self._apply(line)

    def header(self) -> dict[str, Any]:
        return {
            "type": "header", "format": FORMAT, "version": VERSION, "id": self.id, "created": self.created,
            "model": self.model, "model_path": self.model_path, "settings": self.settings, "system": self.system,
        }

    def _apply(self, line: dict[str, Any]) -> None:
        kind = line.get("type")
        if kind == "system":
            self.system = line.get("content")
            self.records.append({"role": "system", "content": line.get("content") or "", "time": line.get("time")})
        elif kind == "message":
            rec = {k: v for k, v in line.items() if k != "type"}
            if rec.get("role") == "assistant" and rec.get("regenerated") and self.records and self.records[-1]["role"] == "assistant":
                self.records[-1] = rec
            else:
                self.records.append(rec)

    def _append(self, lines: list[dict[str, Any]]) -> None:
        path = self.path
        new = not path.exists()
        if new:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.initial_system = self.system
            lines = [self.header(), *lines]
        else:
            cut_torn_tail(path)
        try:
            with open(path, "a", encoding="utf-8") as f:
                append_records(f, lines)
            if new:
                _fsync_dir(path.parent)
        except OSError as e:
            raise RainlocalError(f"cannot save the conversation to {path}: {e.strerror or e}") from None

    # ---- exports -----------------------------------------------------------------------------
    def export(self, suffix: str) -> str:
        """The conversation as Markdown or JSON, chosen by a file name's extension (``/save FILE``)."""
        ext = suffix.lower()
        if ext == ".json":
            return json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n"
        if ext in (".md", ".markdown", ".txt", ""):
            return self.to_markdown()
        raise UsageError(f"cannot save as {ext!r}: use a .md or .json file name")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "created": self.created, "model": self.model, "settings": self.settings,
            "system": self.system, "messages": [dict(r) for r in self.records],
        }

    def to_markdown(self) -> str:
        out = [f"# Conversation {self.id}", ""]
        meta = [f"- started: {self.created}"]
        if self.model:
            meta.append(f"- model: {self.model}")
        if self.settings.get("mode"):
            mode = self.settings["mode"]
            if mode == "rain" and self.settings.get("objective"):
                mode += f" (objective: {self.settings['objective']})"
            meta.append(f"- mode: {mode}")
        out += meta + [""]
        initial = self._initial_system()
        if initial:
            out += ["## System", "", initial, ""]
        for r in self.records:
            role = r["role"]
            if role == "system":
                out += ["## System", "", r["content"] or "*(system prompt removed)*", ""]
            elif role == "user":
                out += ["## User", "", r["content"], ""]
            else:
                out += ["## Assistant", "", r["content"] or "*(empty reply)*", ""]
                if r.get("interrupted"):
                    out += ["*(interrupted)*", ""]
        return "\n".join(out).rstrip("\n") + "\n"

    def _initial_system(self) -> str | None:
        """The system prompt the conversation started with (the header's)."""
        if any(r["role"] == "system" for r in self.records):
            return self.initial_system
        return self.system


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- reading ------------------------------------------------------------------------------------
def load(path: Path) -> Conversation:
    """Read a conversation file; a torn last line is ignored, any other broken line is an error."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RainlocalError(f"cannot read {path}: {e.strerror or e}") from None
    lines = raw.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line torn by a crash
    conv: Conversation | None = None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise RainlocalError(f"{path}:{lineno}: not a JSON line") from None
        if not isinstance(obj, dict):
            raise RainlocalError(f"{path}:{lineno}: not a JSON object")
        if conv is None:
            if obj.get("type") != "header" or obj.get("format") != FORMAT:
                raise RainlocalError(f"{path}: not a rainlocal conversation (no header line)")
            conv = Conversation(
                id=str(obj.get("id") or path.stem), model=obj.get("model") or "",
                model_path=obj.get("model_path") or "", settings=obj.get("settings") or {},
                system=obj.get("system"), created=obj.get("created") or "", directory=path.parent,
            )
            conv.initial_system = obj.get("system")
            continue
        conv._apply(obj)
    if conv is None:
        raise RainlocalError(f"{path}: empty conversation file")
    return conv


@dataclass
class Summary:
    id: str
    path: Path
    updated: float
    conversation: Conversation | None  # None when the file could not be read
    error: str | None = None


def _files(directory: Path | None = None) -> list[Path]:
    d = directory or paths.conversations_dir()
    if not d.is_dir():
        return []
    return [p for p in d.iterdir() if p.suffix == SUFFIX and p.is_file()]


def _by_recency(directory: Path | None = None) -> list[tuple[float, Path]]:
    out: list[tuple[float, Path]] = []
    for p in _files(directory):
        try:
            out.append((p.stat().st_mtime, p))
        except OSError:
            continue
    out.sort(key=lambda t: (t[0], t[1].stem), reverse=True)
    return out


def list_conversations(directory: Path | None = None, limit: int | None = None) -> list[Summary]:
    """Saved conversations, most recently updated first (unreadable files included, marked);
    only the ``limit`` most recent files are read."""
    out: list[Summary] = []
    for mtime, p in _by_recency(directory)[:limit]:
        try:
            out.append(Summary(p.stem, p, mtime, load(p)))
        except RainlocalError as e:
            out.append(Summary(p.stem, p, mtime, None, str(e)))
    return out


def latest(directory: Path | None = None) -> Conversation | None:
    """The most recently updated readable conversation, or None."""
    for _, p in _by_recency(directory):
        try:
            return load(p)
        except RainlocalError:
            continue
    return None


def find(ref: str, directory: Path | None = None) -> Conversation:
    """A conversation by id, unique id prefix, or ``last``."""
    ref = ref.strip()
    if ref == "last":
        conv = latest(directory)
        if conv is None:
            raise UsageError("there are no saved conversations yet")
        return conv
    files = {p.stem: p for p in _files(directory)}
    if ref in files:
        return load(files[ref])
    matches = sorted(k for k in files if k.startswith(ref)) if ref else []
    if len(matches) == 1:
        return load(files[matches[0]])
    if len(matches) > 1:
        raise UsageError(f"{ref!r} matches {len(matches)} conversations ({', '.join(matches[:3])}, …); give more of the id")
    raise UsageError(f"no conversation {ref!r} (rainlocal history lists them)")
