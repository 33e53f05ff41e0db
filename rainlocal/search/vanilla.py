"""Vanilla decoding: one token at a time with temperature / top-k / top-p, the baseline for RAIN.

Same engine (KV-cached prefixes), same stopping rule (``Stopper``) as RAIN, so timings and answers
compare like for like. ``temp == 0`` is greedy. Randomness: ``np.random.default_rng(sampling.seed)``.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from rainlocal.engine.base import Engine, counter_delta
from rainlocal.search.events import Commit, Done
from rainlocal.search.sampling import sample_token
from rainlocal.search.settings import SamplingSettings, StopRule
from rainlocal.search.stopping import Stopper, finish


def vanilla_generate(
    engine: Engine,
    prompt: list[int],
    sampling: SamplingSettings,
    stop: StopRule,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Commit | Done]:
    """Sample an answer to ``prompt`` (full prompt tokens), yielding a ``Commit`` per token and ``Done``."""
    t_start = time.perf_counter()
    start = dict(engine.counters)
    rng = np.random.default_rng(sampling.seed)
    stopper = Stopper(stop, engine.detokenize, engine.is_eog)
    prompt = list(prompt)
    reason: str | None = None
    while not stopper.done:
        if should_stop is not None and should_stop():
            reason = "interrupted"
            break
        lp = engine.logprobs([prompt + stopper.state.tokens], phase="generate")[0]
        tok = sample_token(lp, rng, temp=sampling.temp, top_k=sampling.top_k, top_p=sampling.top_p)
        kept, new = stopper.add([tok])
        if kept or new:
            yield Commit(tokens=list(kept), text=new)
    yield from finish(stopper, reason, {
        "answer_tokens": len(stopper.state.tokens),
        "tokens_decoded": counter_delta(engine, start),
        "time": {"wall": round(time.perf_counter() - t_start, 6)},
    })
