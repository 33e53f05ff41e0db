"""The conversation as a judge reads it: one "User: ..." / "Assistant: ..." line per turn.

Both the search's self-evaluation prompt and the eval judge's prompt show the conversation this
way (system messages are never shown: a judge grades the exchange, not the instructions). One
copy, so the two judges see a conversation the same way.
"""

from __future__ import annotations

from typing import Any, Sequence

USER_LABEL = "User:"
ASSISTANT_LABEL = "Assistant:"


def transcript_lines(messages: Sequence[dict[str, Any]]) -> list[str]:
    """One labelled line per non-system turn, contents stripped."""
    lines = []
    for m in messages:
        role = str(m.get("role", "user"))
        if role == "system":
            continue
        label = ASSISTANT_LABEL if role == "assistant" else USER_LABEL
        lines.append(f"{label} {str(m.get('content', '')).strip()}")
    return lines


def transcript(messages: Sequence[dict[str, Any]], max_chars: int | None = None) -> str:
    """The turns as text; cut from the front (with a marker) beyond ``max_chars``."""
    text = "\n".join(transcript_lines(messages))
    if max_chars is not None and len(text) > max_chars:
        text = "[... earlier turns omitted ...]\n" + text[-max_chars:]
    return text
