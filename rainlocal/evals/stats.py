"""Small statistics for eval reports: Wilson score intervals, paired win/loss/tie, a sign test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """k successes out of n with a Wilson score interval (all in [0, 1]; ``p`` is None when n == 0)."""

    k: int
    n: int
    p: float | None
    lo: float | None
    hi: float | None

    def as_dict(self) -> dict:
        return {"k": self.k, "n": self.n, "rate": self.p, "ci95": [self.lo, self.hi] if self.n else None}


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """Wilson score interval for a binomial proportion (good at small n and rates near 0 or 1)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, None, None, None)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k, n, p, lo, hi)


def rate_of(values: Iterable[bool | None]) -> Rate:
    """Rate of True among the decided values (None = undecided, left out)."""
    vals = [v for v in values if v is not None]
    return wilson(sum(1 for v in vals if v), len(vals))


@dataclass(frozen=True)
class Paired:
    """Paired comparison of system B against system A on the same prompts."""

    wins: int  # B good, A not
    losses: int  # A good, B not
    ties: int  # both good, both not, or either undecided
    p_value: float  # two-sided exact sign test on wins vs losses

    def as_dict(self) -> dict:
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "sign_test_p": self.p_value}


def paired(a: Sequence[bool | None], b: Sequence[bool | None]) -> Paired:
    """Win/loss/tie of ``b`` against ``a`` where True is the better outcome, item by item."""
    def as_score(v: bool | None) -> float | None:
        return None if v is None else float(v)

    return paired_scores([as_score(x) for x in a], [as_score(y) for y in b])


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of wins vs losses under p = 1/2 (1.0 when there are none)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_scores(a: Sequence[float | None], b: Sequence[float | None], eps: float = 1e-9) -> Paired:
    """Win/loss/tie of ``b`` against ``a`` on a graded score (higher is better), item by item.

    For judges that rank replies well but are badly calibrated around 0.5, comparing their scores
    pair by pair uses what they are good at; the thresholded verdicts would throw it away."""
    if len(a) != len(b):
        raise ValueError("paired comparison needs the same number of items on both sides")
    wins = losses = ties = 0
    for x, y in zip(a, b):
        if x is None or y is None or abs(x - y) <= eps:
            ties += 1
        elif y > x:
            wins += 1
        else:
            losses += 1
    return Paired(wins, losses, ties, sign_test(wins, losses))


def cohen_kappa(truth: Sequence[bool | None], pred: Sequence[bool | None]) -> dict:
    """Cohen's kappa of two binary raters over the items both decided: (p_o - p_e) / (1 - p_e), with
    p_o the observed agreement and p_e the agreement expected from each rater's own rates. None when
    p_e is 1 (both raters constant and equal: kappa is undefined)."""
    if len(truth) != len(pred):
        raise ValueError("kappa needs the same number of items from both raters")
    pairs = [(bool(t), bool(p)) for t, p in zip(truth, pred) if t is not None and p is not None]
    n = len(pairs)
    if n == 0:
        return {"kappa": None, "n": 0, "agreement": None}
    po = sum(1 for t, p in pairs if t == p) / n
    t1 = sum(1 for t, _ in pairs if t) / n
    p1 = sum(1 for _, p in pairs if p) / n
    pe = t1 * p1 + (1 - t1) * (1 - p1)
    kappa = None if abs(1 - pe) < 1e-12 else (po - pe) / (1 - pe)
    return {"kappa": kappa, "n": n, "agreement": po}


def ratio_interval(num: Sequence[float], den: Sequence[float], *, seed: int = 0, rounds: int = 2000,
                   z_level: float = 0.95) -> dict:
    """sum(num) / sum(den) over paired items, with a percentile bootstrap interval (items resampled
    with replacement, fixed seed). For cost ratios such as a strategy's wall time over vanilla's."""
    import numpy as np

    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError("a ratio interval needs paired items")
    if len(a) == 0 or b.sum() <= 0:
        return {"ratio": None, "ci95": None, "n": int(len(a))}
    ratio = float(a.sum() / b.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(rounds, len(a)))
    sb = b[idx].sum(axis=1)
    ok = sb > 0
    boots = a[idx].sum(axis=1)[ok] / sb[ok]
    lo, hi = (float(x) for x in np.quantile(boots, [(1 - z_level) / 2, 1 - (1 - z_level) / 2]))
    return {"ratio": ratio, "ci95": [lo, hi], "n": int(len(a))}
