"""The OpenAI response bodies: a whole chat completion or text completion, and the chunks of a stream.

rainlocal's own facts about an answer (mode, profile, objective, stop reason, timings and the search
statistics that ``rainlocal run --json`` prints) go in one extra top-level field, ``rainlocal``, which
OpenAI clients ignore and keep (``response.model_extra["rainlocal"]`` in the ``openai`` package).
"""

from __future__ import annotations

from typing import Any

from rainlocal.generate import GenerationSettings
from rainlocal.search.events import Done

#: OpenAI's finish_reason for each of rainlocal's stop reasons.
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "interrupted": "stop", "judge": "content_filter"}


def usage(done: Done) -> dict[str, int]:
    u = done.stats.get("usage", {})
    return {"prompt_tokens": int(u.get("prompt_tokens", 0)), "completion_tokens": int(u.get("completion_tokens", 0)),
            "total_tokens": int(u.get("total_tokens", 0))}


def extra(done: Done, gen: GenerationSettings) -> dict[str, Any]:
    stats = {k: v for k, v in done.stats.items() if k not in ("usage", "timings")}
    out: dict[str, Any] = {"mode": gen.mode, "stop_reason": done.stop_reason, "seed": gen.sampling.seed,
                           "timings": done.stats.get("timings", {}), "stats": stats}
    if gen.mode == "rain":
        out.update(profile=gen.profile, objective=gen.objective)
    return out


def _head(rid: str, obj: str, created: int, model: str) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": None}


def chat_completion(rid: str, created: int, model: str, done: Done, gen: GenerationSettings) -> dict[str, Any]:
    return {**_head(rid, "chat.completion", created, model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "logprobs": None, "finish_reason": FINISH[done.stop_reason]}],
            "usage": usage(done), "rainlocal": extra(done, gen)}


def text_completion(rid: str, created: int, model: str, done: Done, gen: GenerationSettings) -> dict[str, Any]:
    return {**_head(rid, "text_completion", created, model),
            "choices": [{"index": 0, "text": done.text, "logprobs": None, "finish_reason": FINISH[done.stop_reason]}],
            "usage": usage(done), "rainlocal": extra(done, gen)}


class Chunks:
    """The chunks of one streamed answer, chat (``chat.completion.chunk``) or text (``text_completion``)."""

    def __init__(self, rid: str, created: int, model: str, *, chat: bool, include_usage: bool):
        self.head = _head(rid, "chat.completion.chunk" if chat else "text_completion", created, model)
        self.chat = chat
        self.include_usage = include_usage

    def _chunk(self, choice: dict[str, Any], **more: Any) -> dict[str, Any]:
        out = {**self.head, "choices": [{"index": 0, "logprobs": None, **choice}], **more}
        if self.include_usage:
            out.setdefault("usage", None)  # OpenAI: null on every chunk but the last
        return out

    def start(self) -> dict[str, Any] | None:
        """Chat streams open with the assistant's role, as OpenAI's do."""
        if not self.chat:
            return None
        return self._chunk({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})

    def text(self, text: str) -> dict[str, Any]:
        if self.chat:
            return self._chunk({"delta": {"content": text}, "finish_reason": None})
        return self._chunk({"text": text, "finish_reason": None})

    def finish(self, done: Done, gen: GenerationSettings) -> dict[str, Any]:
        body = {"delta": {}} if self.chat else {"text": ""}
        return self._chunk({**body, "finish_reason": FINISH[done.stop_reason]}, rainlocal=extra(done, gen))

    def usage(self, done: Done) -> dict[str, Any] | None:
        """The last chunk when ``stream_options.include_usage``: no choices, the whole answer's usage."""
        if not self.include_usage:
            return None
        return {**self.head, "choices": [], "usage": usage(done)}
