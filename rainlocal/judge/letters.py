"""P(good option letter): the one computation both judges share.

The search's self-evaluation (``rainlocal.judge.self_eval``) and the eval's local judge
(``rainlocal.evals.judges``) both read a judge model's next-token log-probabilities after a cue
such as "The answer is: (" and turn them into a probability per option. Each option may have
several single-token spellings ("A", " A"); their probabilities are summed. Kept in one place so the
two judges cannot drift apart in how they read a verdict.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def logsumexp(values: Sequence[float] | np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    m = float(np.max(values))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(values - m))))


def option_logprobs(row: Sequence[float] | np.ndarray, ids: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """log P(option) per option name: the log of the summed probabilities of its token ids."""
    row = np.asarray(row, dtype=np.float64)
    return {name: logsumexp(row[list(toks)]) for name, toks in ids.items()}


def share(lp_good: float, lp_bad: float) -> float:
    """P(good) / (P(good) + P(bad)) from log-probabilities (0.5 if both are zero)."""
    if lp_good == -math.inf and lp_bad == -math.inf:
        return 0.5
    d = lp_bad - lp_good
    if d > 700:
        return 0.0
    if d < -700:
        return 1.0
    return 1.0 / (1.0 + math.exp(d))


def normalised(lps: Mapping[str, float]) -> dict[str, float]:
    """The options' probabilities renormalised over the options alone (uniform if all are zero)."""
    names = list(lps)
    finite = [lps[n] for n in names if math.isfinite(lps[n])]
    if not finite:
        return {n: 1.0 / len(names) for n in names}
    m = max(finite)
    w = {n: (math.exp(lps[n] - m) if math.isfinite(lps[n]) else 0.0) for n in names}
    total = sum(w.values())
    return {n: v / total for n, v in w.items()}
