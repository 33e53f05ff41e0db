"""What a probe reads: the request's state and the mean state over the start of a reply.

* **Request**: the state at the prompt's last token (the chat template's last token before the reply):
  harmfulness of the request is readable there before a word is answered.
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


def reply_window(states: np.ndarray) -> np.ndarray:
    """The judged feature of a reply's per-token states: the mean of the latest ``WINDOW`` rows."""
    return states[-WINDOW:].mean(axis=0)


@dataclass
class CaseStates:
    """States of labelled (request, reply) cases: ``request[i]`` is ``[n_layers, d]``; ``prefix[i]`` is
    ``[len(PREFIXES), n_layers, d]`` (means over the first k reply tokens; a reply shorter than k
    repeats its whole mean) and ``n_reply[i]`` its token count."""

    request: np.ndarray
    prefix: np.ndarray
    n_reply: np.ndarray


def read_case(engine, prompt: list[int], reply: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """(request state, prefix means, reply length) of ``prompt + reply[:WINDOW]``, from the states the
    engine kept (a decode that already ran; whatever is missing is decoded now)."""
    seq = list(prompt) + list(reply[:WINDOW])
    st = engine.hidden_states(seq, len(prompt) - 1)
    body = st[1:] if len(st) > 1 else st[:1]
    sums = np.cumsum(body, axis=0)
    means = np.stack([sums[min(k, len(body)) - 1] / min(k, len(body)) for k in PREFIXES])
    return st[0], means, len(st) - 1


def case_states(engine, prompts: Sequence[list[int]], replies: Sequence[list[int]], *,
                batch: int = 8, progress: Callable[[int], None] | None = None) -> CaseStates:
    """Decode each ``prompt + reply[:WINDOW]`` once (``batch`` at a time, only as deep as the wanted
    layers: ``read_states``) and read the wanted layers."""
    rows = []
    for a in range(0, len(prompts), batch):
        group = list(zip(prompts[a:a + batch], replies[a:a + batch]))
        engine.read_states([list(p) + list(r[:WINDOW]) for p, r in group], phase="judge")
        rows.extend(read_case(engine, p, r) for p, r in group)
        engine.reset()
        if progress is not None:
            progress(len(group))
    return stack_cases(rows)


def stack_cases(rows: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> CaseStates:
    return CaseStates(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.asarray([r[2] for r in rows]))
