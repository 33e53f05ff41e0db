"""Rollout (reference code, not in the paper's pseudo-code): finish the current phrase before judging.

From a leaf, sample tokens at temperature 1 over the full vocabulary until the answer text ends with
one of the delimiters (``, . ? : ; \\n``), the model emits an end-of-generation token (not kept), a
stop string (new turn) appears, ``rollout_max_tokens`` tokens were drawn, or the answer reaches its
length limit. If the leaf's text already ends with a delimiter nothing is sampled. Rollout tokens are
judged and embedded but never enter the tree. Model calls are tagged with phase "rollout".
"""

from __future__ import annotations

import numpy as np

from rainlocal.engine.base import Engine
from rainlocal.search.sampling import sample_token
from rainlocal.search.settings import RainSettings, StopRule


def rollout_done(text: str, settings: RainSettings, stop: StopRule) -> bool:
    if text and text[-1] in settings.rollout_delimiters:
        return True
    return stop.find(text) >= 0


def rollout(
    engine: Engine,
    prompt: list[int],
    answer: list[int],
    settings: RainSettings,
    stop: StopRule,
    rng: np.random.Generator,
) -> list[int]:
    """Tokens sampled after ``prompt + answer`` (``answer`` = committed answer + the leaf's path)."""
    out: list[int] = []
    budget = min(settings.rollout_max_tokens, max(stop.max_tokens - len(answer), 0))
    while len(out) < budget:
        if rollout_done(engine.detokenize(answer + out), settings, stop):
            break
        lp = engine.logprobs([prompt + answer + out], phase="rollout")[0]
        tok = sample_token(lp, rng, temp=1.0)
        if engine.is_eog(tok):
            break
        out.append(tok)
    return out
