"""Fitting a model's probes on its first latent answer, without holding the user's answer hostage.

The quick fit takes under 3 minutes for a 0.5B model on two cores, but it grows with the model: the RAIN
paper's llama-2-13b-chat would take about an hour on the same machine (scaled by parameter count). So the
first-use fit watches its own pace: once it has run ``WATCH_S`` seconds, a fit projected to take longer
than the budget (``RAINLOCAL_FIT_BUDGET`` seconds, default ``BUDGET_S``; 0 never fits on first use)
stops, one line says how long it would have taken and how to fit it (``rainlocal calibrate``, which has no
budget), and the prompted judge answers. The projection is remembered by the model's content fingerprint,
so the next answer does not spend those seconds again (a budget raised above it tries again). Ctrl-C
during the fit stops only the fit: the answer the user asked for still comes, from the prompted judge.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

#: The longest first-use fit (seconds) that runs before an answer; longer ones are left to ``calibrate``.
BUDGET_S = 600.0
#: How long the fit runs before its pace is judged (its first units are its slowest: long conversations).
WATCH_S = 20.0
ESTIMATES = "probe-fit-estimates.json"

_declined: set[str] = set()  # fingerprints not fitted in this process (too slow, off, or Ctrl-C): said once


class FitTooSlow(Exception):
    def __init__(self, projected_s: float):
        super().__init__(f"projected {projected_s:.0f} s")
        self.projected_s = projected_s


def budget_s() -> float:
    """``RAINLOCAL_FIT_BUDGET`` (seconds), else ``BUDGET_S``; a value that is not a number is ignored."""
    raw = os.environ.get("RAINLOCAL_FIT_BUDGET", "").strip()
    try:
        return max(0.0, float(raw)) if raw else BUDGET_S
    except ValueError:
        return BUDGET_S


def pace_watch(total: int, budget: float, clock: Callable[[], float] = time.monotonic) -> Callable[[int], None]:
    """A progress callback that raises ``FitTooSlow`` once, after ``WATCH_S`` seconds, the time so far
    plus the remaining units at the pace so far exceeds ``budget`` (or the time so far alone does)."""
    start = clock()
    done = 0

    def advance(k: int) -> None:
        nonlocal done
        done += k
        elapsed = clock() - start
        if elapsed < WATCH_S and elapsed <= budget:
            return
        projected = elapsed * max(total, done) / max(done, 1)
        if projected > budget:
            raise FitTooSlow(projected)

    return advance


def _estimates_path() -> Path:
    from rainlocal.paths import cache_dir

    return cache_dir() / ESTIMATES


def known_projection(fingerprint: str) -> float | None:
    """The projected fit time remembered for this model file, if an earlier first use measured one."""
    from rainlocal.json_store import read_dict

    entry = read_dict(_estimates_path()).get(fingerprint)
    value = entry.get("projected_s") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def remember_projection(fingerprint: str, projected_s: float) -> None:
    from rainlocal.json_store import remember

    remember(_estimates_path(), fingerprint,
             {"projected_s": round(projected_s, 1), "measured": time.strftime("%Y-%m-%d")})


def minutes(seconds: float) -> str:
    """A fit's duration as people say it ("about 3 min", "about 1.2 h")."""
    return f"about {max(1, round(seconds / 60))} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"


def fit_on_first_use(engine, say: Callable[[str], None]) -> Path | None:
    """Fit ``engine``'s probes now if that fits the budget; the file written, or None (and one line said)."""
    from rainlocal.cli.calibrate import run_calibration
    from rainlocal.gguf_info import content_fingerprint

    name = engine.path.name
    how = f"fit them once with: rainlocal calibrate -m {engine.path}"
    fp = content_fingerprint(engine.path)
    budget = budget_s()
    if fp in _declined:
        return None
    known = known_projection(fp)
    if budget <= 0:
        why = "RAINLOCAL_FIT_BUDGET=0 turns fitting on first use off"
    elif known is not None and known > budget:
        why = f"fitting them here takes {minutes(known)} (measured on first use)"
    else:
        why = None
    if why is not None:
        say(f"note: {name} has no latent-judge probes; {why}; {how}; the prompted judge answers instead")
        _declined.add(fp)
        return None
    say(f"{name} has no latent-judge probes yet: fitting them once (rainlocal calibrate; Ctrl-C skips it)")
    try:
        _, path = run_calibration(engine, quick=True, budget_s=budget)
    except FitTooSlow as slow:
        remember_projection(fp, slow.projected_s)
        say(f"note: fitting {name}'s probes would take {minutes(slow.projected_s)} here, more than the first-use "
            f"budget ({minutes(budget)}; RAINLOCAL_FIT_BUDGET); {how}; the prompted judge answers instead")
        _declined.add(fp)
        return None
    except KeyboardInterrupt:
        say(f"note: fitting stopped; {how}; the prompted judge answers instead")
        _declined.add(fp)
        return None
    finally:
        engine.reset()
    return path
