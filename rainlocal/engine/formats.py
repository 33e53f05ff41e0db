"""Turning a conversation into prompt tokens.

Models that carry a chat template in their GGUF metadata are formatted with it (rendered with
llama-cpp-python's Jinja2 formatter, as llama.cpp's own server does). Base models without a
template get a plain ``Human:`` / ``Assistant:`` transcript, which base models continue sensibly,
instead of the Llama-2 format llama-cpp-python would silently apply. ``--chat-format`` picks one
of llama-cpp-python's named formats (chatml, llama-2, gemma, ...) or ``plain`` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from rainlocal.errors import UsageError

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}

PLAIN = "plain"
TEMPLATE = "template"


@dataclass
class FormattedPrompt:
    """The prompt text, the markers of a new turn, and which parts of the text are messages.

    ``parts`` splits ``text`` into ``(piece, markup)`` pairs: only markup pieces (the template's
    own text) may be tokenized with control tokens parsed; a message's text stays text, so a
    message that contains the template's markers (``<|im_end|>``, ``<|im_start|>system``) cannot
    open a turn of its own."""

    text: str
    stop: list[str] = field(default_factory=list)
    parts: list[tuple[str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.parts:
            self.parts = [(self.text, True)]


def mark_messages(text: str, contents: list[str]) -> list[tuple[str, bool]]:
    """Split a rendered prompt into markup and message pieces, finding each message's text in order.

    A template may trim a message, so the stripped text is looked for when the whole is not found;
    a message the template changed beyond that is left to the markup (nothing is lost, only its
    control-token protection)."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for content in contents:
        for needle in (content, content.strip()):
            i = text.find(needle, pos) if needle else -1
            if i >= 0:
                break
        if i < 0:
            continue
        if i > pos:
            parts.append((text[pos:i], True))
        parts.append((needle, False))
        pos = i + len(needle)
    if pos < len(text) or not parts:
        parts.append((text[pos:], True))
    return parts


def _plain(messages: list[Message]) -> FormattedPrompt:
    parts: list[str] = []
    for m in messages:
        role, content = m["role"], m["content"].strip()
        if role == "system":
            parts.append(content)
        elif role == "user":
            parts.append(f"Human: {content}")
        else:
            parts.append(f"Assistant: {content}")
    text = "\n\n".join(parts) + "\n\nAssistant:"
    return FormattedPrompt(text=text, stop=["\nHuman:", "\nAssistant:"])


def _named_formatters() -> dict[str, Callable]:
    from llama_cpp import llama_chat_format as lcf

    names = {
        "llama-2": "format_llama2",
        "llama-3": "format_llama3",
        "alpaca": "format_alpaca",
        "qwen": "format_qwen",
        "zephyr": "format_zephyr",
        "chatml": "format_chatml",
        "mistral-instruct": "format_mistral_instruct",
        "gemma": "format_gemma",
        "openchat": "format_openchat",
    }
    out = {}
    for name, attr in names.items():
        fn = getattr(lcf, attr, None)
        if fn is not None:
            out[name] = fn
    return out


def format_names() -> list[str]:
    """Every value ``--chat-format`` accepts."""
    return [TEMPLATE, PLAIN, *sorted(_named_formatters())]


class ChatFormatter:
    """Formats conversations for one loaded model."""

    def __init__(self, chat_template: str | None, bos_text: str, eos_text: str, chat_format: str | None = None):
        self.name = chat_format or (TEMPLATE if chat_template else PLAIN)
        self._fn: Callable[[list[Message]], FormattedPrompt]
        if self.name == PLAIN:
            self._fn = _plain
        elif self.name == TEMPLATE:
            if not chat_template:
                raise UsageError("this model has no chat template; use --chat-format plain or a named format")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            jinja = Jinja2ChatFormatter(template=chat_template, eos_token=eos_text, bos_token=bos_text)

            def render(messages: list[Message]) -> FormattedPrompt:
                try:
                    r = jinja(messages=messages)
                except Exception as e:  # jinja raise_exception() in templates, e.g. role order rules
                    raise UsageError(f"the model's chat template rejected the conversation: {e}") from None
                stop = [s for s in (r.stop if isinstance(r.stop, list) else [r.stop] if r.stop else []) if s]
                return FormattedPrompt(text=r.prompt, stop=[s for s in stop if s != eos_text])

            self._fn = render
        else:
            named = _named_formatters()
            if self.name not in named:
                raise UsageError(f"unknown chat format {self.name!r} (known: {', '.join(format_names())})")
            fn = named[self.name]

            def render_named(messages: list[Message]) -> FormattedPrompt:
                r = fn(messages=messages)
                stop = r.stop if isinstance(r.stop, list) else [r.stop] if r.stop else []
                return FormattedPrompt(text=r.prompt, stop=[s for s in stop if s])

            self._fn = render_named

    def __call__(self, messages: list[Message]) -> FormattedPrompt:
        fp = self._fn(messages)
        fp.parts = mark_messages(fp.text, [str(m.get("content") or "") for m in messages])
        return fp


def build_messages(prompt: str | None, system: str | None, history: list[Message] | None = None) -> list[Message]:
    """The conversation for one request: optional system prompt, earlier turns, the new user turn."""
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(m for m in (history or []) if m.get("role") != "system")
    if prompt is not None:
        messages.append({"role": "user", "content": prompt})
    return messages
