"""What a probe reads: the request's state and the mean state over the start of a reply.

* **Request**: the state at the prompt's last token (the chat template's last token before the reply):
  harmfulness of the request is readable there before a word is answered. Beside it the feature holds
  the mean state over the last user message and the template after it (``request_feature``); a probe
  reads either the first half alone (``"last"``) or both (``"last+mean"``), whichever its fit chose.
  (For qwen2.5-coder-0.5b the mean read XSTest's requests at AUC 0.916 against 0.896 for the last
  token alone: an alarming word in a harmless request weighs less when the whole message is read.)
* **Reply**: the mean state over the reply's tokens, at most the last ``WINDOW`` of them. The probes
  are fitted on reply prefixes of several lengths (``PREFIXES``) so that a partial answer of 4 tokens is
  judged on the same scale as one of 48; a longer answer is judged by its latest ``WINDOW`` tokens, so a
  harmful turn late in a long answer is not averaged away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

#: Reply tokens a judged window holds (the latest ones).
WINDOW = 48
#: Reply prefix lengths the probes are fitted on.
PREFIXES = (4, 8, 16, 32, 48)


#: How a request probe may read the request feature (``request_feature``): its first half or all of it.
REQUEST_READS = ("last", "last+mean")


def request_start(prompt_tokens: Callable[[list[dict]], list[int]], messages, tokens: Sequence[int]) -> int:
    """Where the last user message starts in ``tokens`` (the prompt ``prompt_tokens`` made of ``messages``):
    the first token that differs from the prompt of the same conversation with that message emptied.
    Found this way, it holds for any chat template; a prompt that is not the template's (a raw text
    completion) differs at once, so the whole of it is read as the request."""
    n = len(tokens)
    users = [i for i, m in enumerate(messages or []) if isinstance(m, dict) and m.get("role") == "user"]
    if not users or n == 0:
        return max(0, n - 1)
    last = users[-1]
    blank = prompt_tokens([*messages[:last], {**messages[last], "content": ""}, *messages[last + 1:]])
    k = 0
    while k < min(n, len(blank)) and int(tokens[k]) == int(blank[k]):
        k += 1
    return min(k, n - 1)


def request_feature(rows: np.ndarray) -> np.ndarray:
    """The request feature from the states of the last user message through the prompt's last token
    (``[n, n_layers, d]``): ``[n_layers, 2 d]``, the last token's state, then the mean over the rows."""
    return np.concatenate([rows[-1], rows.mean(axis=0)], axis=-1)


def read_request(engine, prompt: Sequence[int], start: int) -> np.ndarray:
    """The request feature of ``prompt`` (``[n_layers_wanted, 2 d]``), its request beginning at ``start``."""
    start = min(max(0, int(start)), len(prompt) - 1)
    return request_feature(engine.hidden_states(list(prompt), start))


def reply_window(states: np.ndarray) -> np.ndarray:
    """The judged feature of a reply's per-token states: the mean of the latest ``WINDOW`` rows."""
    return states[-WINDOW:].mean(axis=0)


@dataclass
class CaseStates:
    """States of labelled (request, reply) cases: ``request[i]`` is ``[n_layers, 2 d]`` (``request_feature``); ``prefix[i]`` is
    ``[len(PREFIXES), n_layers, d]`` (means over the first k reply tokens; a reply shorter than k
    repeats its whole mean) and ``n_reply[i]`` its token count."""

    request: np.ndarray
    prefix: np.ndarray
    n_reply: np.ndarray


def read_case(engine, prompt: list[int], reply: list[int], start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(request feature, prefix means, reply length) of ``prompt + reply[:WINDOW]``, the request read from
    ``start`` (``request_start``), from the states the engine kept (a decode that already ran; whatever is
    missing is decoded now)."""
    seq = list(prompt) + list(reply[:WINDOW])
    start = min(max(0, int(start)), len(prompt) - 1)
    k = len(prompt) - start
    st = engine.hidden_states(seq, start)
    body = st[k:] if len(st) > k else st[k - 1:k]
    sums = np.cumsum(body, axis=0)
    means = np.stack([sums[min(j, len(body)) - 1] / min(j, len(body)) for j in PREFIXES])
    return request_feature(st[:k]), means, len(st) - k


def case_states(engine, prompts: Sequence[list[int]], replies: Sequence[list[int]], starts: Sequence[int], *,
                batch: int = 8, progress: Callable[[int], None] | None = None) -> CaseStates:
    """Decode each ``prompt + reply[:WINDOW]`` once (``batch`` at a time, only as deep as the wanted
    layers: ``read_states``) and read the wanted layers; ``starts[i]``: where prompt i's request begins."""
    rows = []
    for a in range(0, len(prompts), batch):
        group = list(zip(prompts[a:a + batch], replies[a:a + batch], starts[a:a + batch]))
        engine.read_states([list(p) + list(r[:WINDOW]) for p, r, _ in group], phase="judge")
        rows.extend(read_case(engine, p, r, s) for p, r, s in group)
        engine.reset()
        if progress is not None:
            progress(len(group))
    return stack_cases(rows)


def stack_cases(rows: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> CaseStates:
    return CaseStates(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.asarray([r[2] for r in rows]))
