"""An engine factory for ``RAINLOCAL_ENGINE_FACTORY=fake_cli_engine:make``: the scripted fake engine
dressed as a loaded model, so CLI behaviour (exit codes, JSON, batch, chat) is tested in milliseconds.

The vocabulary is one token per printable character; the prompt is formatted as a plain transcript
(no chat template). After the last ``Assistant:`` the fake writes one of two scripted replies, the
compliant ``REPLIES[0]`` more likely than the refusal ``REPLIES[1]``, then ends; anywhere else (the
judge's prompts) every character is equally likely. A model name starting with ``missing`` fails to
load as a missing file would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    from fake_engine import FakeEngine
except ImportError:
    from tests.fake_engine import FakeEngine

VOCAB = ["<eos>", "<bos>", "\n"] + [chr(c) for c in range(32, 127)]
REPLIES = (" Sure, here is how.", " No, I will not.")
WEIGHTS = (0.7, 0.3)
MARK = "Assistant:"


class CliFakeEngine(FakeEngine):
    def __init__(self, model, n_ctx: int = 4096):
        super().__init__(VOCAB, self._next, eog=(0,), floor=1e-9)
        self.path = Path(str(model or "fake-model.gguf"))
        self.n_ctx = n_ctx or 4096
        self.chat_template = None
        self.bos_token = None
        self.eos_token = 0
        self.closed = False

    def token_text(self, token):
        return "" if token is None else self.vocab[token]

    def prompt_tokens(self, prompt) -> list[int]:
        """Text, or ``(piece, markup)`` parts (``FormattedPrompt.parts``): control tokens in markup only."""
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=True)
        return [t for piece, markup in prompt for t in self.tokenize(piece, special=markup)]

    def reset(self) -> None:
        self._trie = {}

    def close(self) -> None:
        self.closed = True

    def _next(self, seq):
        text = self.detokenize(seq)
        at = text.rfind(MARK)
        if at < 0:
            return np.ones(self.n_vocab)
        answer = text[at + len(MARK):]
        out = {}
        for reply, weight in zip(REPLIES, WEIGHTS):
            if reply.startswith(answer):
                nxt = reply[len(answer):len(answer) + 1]
                tok = VOCAB.index(nxt) if nxt else 0
                out[tok] = out.get(tok, 0.0) + weight
        return out or np.ones(self.n_vocab)


def make(model, *, n_ctx: int = 4096, **_ignored) -> CliFakeEngine:
    if model is not None and str(model).startswith("missing"):
        from rainlocal.errors import ModelError

        raise ModelError(f"no such model file: {model}")
    return CliFakeEngine(model, n_ctx=n_ctx)
