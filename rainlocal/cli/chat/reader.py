"""The terminal input reader: one message per call (a line, backslash-continued lines or a \"\"\" block),
with readline editing and an input history file kept across sessions."""

from __future__ import annotations

from pathlib import Path

PROMPT = ">>> "
CONTINUATION = "... "


class Exit(Exception):
    """Leave the chat loop normally (exit code 0)."""


class History:
    """Input history in a file, read at start and appended after every line (readline when present)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            import readline
        except ImportError:  # pragma: no cover - Windows without pyreadline
            self.readline = None
            return
        self.readline = readline
        try:
            readline.set_history_length(2000)
            if path.exists():
                readline.read_history_file(str(path))
        except OSError:
            pass

    def buffer(self) -> str:
        return self.readline.get_line_buffer() if self.readline is not None else ""

    def added(self, line: str) -> None:
        if self.readline is None or not line.strip():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch()
            self.readline.append_history_file(1, str(self.path))
        except (OSError, AttributeError):
            pass


def _colored(prompt: str) -> str:
    # \001 and \002 tell readline that the escape codes take no room on the line.
    return f"\001\033[1;32m\002{prompt}\001\033[0m\002"


def read_message(history: History) -> str | None:
    """One message from the terminal: a line, backslash-continued lines, or a \"\"\" block.

    Returns None when Ctrl-C discarded a half-typed message; raises Exit on Ctrl-D or on Ctrl-C at
    an empty prompt."""
    lines: list[str] = []
    block = False
    prompt = PROMPT
    while True:
        try:
            line = input(_colored(prompt))
        except EOFError:
            print()
            if lines:
                return None
            raise Exit from None
        except KeyboardInterrupt:
            typed = history.buffer()
            print()
            if lines or typed:
                return None
            raise Exit from None
        history.added(line)
        if block:
            if line.rstrip().endswith('"""'):
                lines.append(line.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(line)
            continue
        if not lines and line.lstrip().startswith('"""'):
            rest = line.lstrip()[3:]
            if rest.rstrip().endswith('"""') and rest.strip():
                return rest.rstrip()[:-3]
            block = True
            if rest:
                lines.append(rest)
            prompt = CONTINUATION
            continue
        if line.endswith("\\"):
            lines.append(line[:-1])
            prompt = CONTINUATION
            continue
        lines.append(line)
        return "\n".join(lines)
