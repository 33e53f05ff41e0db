"""Turning a growing list of answer tokens into safe-to-print text and a stop decision.

Shared by vanilla and RAIN so both stop by the same rule: an end-of-generation token anywhere in
what was just added (RAIN commits several tokens at once; the reference code missed EOS inside a
set), a new-turn marker in the text, or the length limit. Text that might be the start of a stop
marker, or half of a multi-byte character, is held back until it is decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from rainlocal.search.events import Commit, Done
from rainlocal.search.settings import StopRule


@dataclass
class AnswerState:
    """The committed answer and how much of its text has been handed out."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    stop_reason: str | None = None


class Stopper:
    def __init__(self, rule: StopRule, detokenize: Callable[[Sequence[int]], str], is_eog: Callable[[int], bool]):
        self.rule = rule
        self.detokenize = detokenize
        self.is_eog = is_eog
        self.state = AnswerState()

    def add(self, tokens: Sequence[int]) -> tuple[list[int], str]:
        """Append committed tokens; return (tokens kept, new text safe to print)."""
        st = self.state
        kept: list[int] = []
        for t in tokens:
            if self.is_eog(t):
                st.stop_reason = "eos"
                break
            kept.append(t)
            if len(st.tokens) + len(kept) >= self.rule.max_tokens:
                st.stop_reason = "length"
                break
        st.tokens.extend(kept)
        text = self.detokenize(st.tokens)
        cut = self.rule.find(text)
        if cut >= 0:
            text = text[:cut]
            st.stop_reason = "stop"
            # Keep only the tokens whose text lies before the stop marker.
            n = len(st.tokens)
            while n > 0 and len(self.detokenize(st.tokens[:n])) > cut:
                n -= 1
            kept = kept[: max(0, len(kept) - (len(st.tokens) - n))]
            del st.tokens[n:]
        st.text = text
        safe = len(text)
        if st.stop_reason is None:
            safe = self._safe_length(text)
        else:
            text = text.rstrip("\ufffd")
            safe = len(text)
            st.text = text
        new = text[st.emitted:safe]
        st.emitted = max(st.emitted, safe)
        return kept, new

    def flush(self) -> str:
        """Whatever was held back, at the end of the answer."""
        st = self.state
        st.text = st.text.rstrip("\ufffd")
        new = st.text[st.emitted:]
        st.emitted = len(st.text)
        return new

    @property
    def done(self) -> bool:
        return self.state.stop_reason is not None

    def _safe_length(self, text: str) -> int:
        safe = len(text.rstrip("\ufffd"))
        for s in self.rule.stop_strings:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe = min(safe, len(text[:safe]) - k)
                    break
        return safe


def finish(stopper: Stopper, reason: str | None, stats: dict[str, Any]) -> Iterator[Commit | Done]:
    """The last events of every decoding loop: text held back until now, then ``Done`` (the stop reason
    is ``reason`` if the loop ended early, else the stopper's, else end of generation)."""
    tail = stopper.flush()
    if tail:
        yield Commit(tokens=[], text=tail)
    st = stopper.state
    yield Done(tokens=list(st.tokens), text=st.text, stop_reason=reason or st.stop_reason or "eos", stats=stats)
