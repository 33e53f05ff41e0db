"""Prompt tokens with control tokens parsed in the chat template's markup only.

Why: a formatted prompt tokenized with control-token parsing everywhere lets a message that spells
the template's markers (``<|im_end|>``, ``<|im_start|>system``) open a turn of its own.
"""

from __future__ import annotations

import ctypes
import re


def tokenize_parts(engine, parts: list[tuple[str, bool]]) -> list[int]:
    """Split the text at the control tokens of markup pieces only, and tokenize what lies between
    as plain text: exactly what llama.cpp does with control-token parsing (it tokenizes the text
    between control tokens fragment by fragment), minus the control tokens inside messages.
    Tokenizing each piece on its own instead would cut words at a message's edges."""
    ll = engine._ll
    mask = ll.LLAMA_TOKEN_ATTR_CONTROL | ll.LLAMA_TOKEN_ATTR_UNKNOWN
    out: list[int] = []
    raw: list[str] = []

    def flush() -> None:
        if raw:
            out.extend(engine.tokenize("".join(raw), special=False))
            raw.clear()

    for piece, markup in parts:
        if not piece:
            continue
        controls = {}
        if markup:
            for t in engine.tokenize(piece, special=True):
                if int(ll.llama_vocab_get_attr(engine.vocab, t)) & mask:
                    controls[_control_text(engine, t)] = t
        if not controls:
            raw.append(piece)
            continue
        pattern = "(" + "|".join(re.escape(c) for c in sorted(controls, key=len, reverse=True)) + ")"
        for k, bit in enumerate(re.split(pattern, piece)):
            if k % 2:
                flush()
                out.append(controls[bit])
            elif bit:
                raw.append(bit)
    flush()
    return out

def _control_text(engine, token: int) -> str:
    buf = ctypes.create_string_buffer(256)
    n = engine._ll.llama_token_to_piece(engine.vocab, int(token), buf, len(buf), 0, True)
    return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")
