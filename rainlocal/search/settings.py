"""Settings for decoding: sampling (shared by vanilla and RAIN) and the RAIN search constants.

Defaults are the reference code's HH ("harmless") constants; see docs in rain-algorithm.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass
class SamplingSettings:
    """Plain decoding knobs; RAIN uses ``seed`` and ``max_tokens`` and its own candidate sampling."""

    temp: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    seed: int = 0
    max_tokens: int = 256


@dataclass
class RainSettings:
    """RAIN constants (names follow the paper); every field can be set in ``[rain]`` of config.toml."""

    T: int = 50  # max searches per step: budget max(T - root.fn, min_searches)
    min_searches: int = 15  # floor of the per-step budget
    T_m: int = 6  # early stop when the most-visited root child has fn > T_m ...
    V: float = 0.8  # ... and q > V
    c: float = 2.0  # exploration constant in the selection score (Eq. 1)
    gamma: float = 0.2  # similarity update weight (Eq. 2)
    sim_threshold: float = 0.95  # siblings at least this similar share a score
    similarity: bool = True  # similarity updates on/off (ablation)
    set_lengths: tuple[int, ...] = (1, 2, 4, 10)  # token-set length by absolute answer depth
    root_children: int = 10  # top-k single tokens at depth 0
    n_children: int = 10  # greedy + up to n_children-1 distinct samples deeper
    cand_top_k: int = 15
    cand_temp: float = 1.0
    cand_tries: int = 9  # samples drawn to find distinct candidates (AdvBench profile: 19)
    root_uniform: float = 0.25  # prior mixing at the (re-)root: (1-x) p + x / K
    rollout: bool = True  # sample to the next delimiter before judging (reference code)
    rollout_delimiters: str = ",.?:;\n"
    rollout_max_tokens: int = 32
    dynamic_add: bool = True
    max_children: int = 20  # dynamic addition only below this many children
    dyn_var_coef: float = 0.03  # embeddings "barely differ": ||var|| < coef * set length
    score: str = "vote"  # "vote" (paper: two orders, hard votes), "soft" (order-debiased mean) or
    # "single" (question before the conversation, one order, soft; cheap, meant with calibrate)
    # The loop: "tree" (the paper's: every token set chosen by a tree search) or "draft" (the fast
    # profile, search/fast.py: draft a clause, judge it once, tree-search only where the judge objects).
    loop: str = "tree"
    commit: str = "visits"  # the root child a step commits: "visits" (paper) or "value" (best q among visited)
    draft_max_tokens: int = 32  # a drafted clause ends at a delimiter or after this many tokens
    min_clause_tokens: int = 12  # ... but not at a delimiter before this many (fewer, longer checks)
    first_draft_tokens: int = 8  # ... the answer's first clause after this many (the first words come sooner)
    calibrate: bool = False  # score relative to plain compliance to the same request (fast.Calibrated) ...
    calibration_scale: float = 0.2  # ... in units of this much soft score
    accept: float = 0.3  # a clause scoring at least this is committed and shown
    hold: float = 0.0  # one scoring in [hold, accept) is kept but held back; below hold it is rejected
    rewind_further: float = -0.5  # a rejected clause scoring at most this also drops the held clauses before it
    search_max_sets: int = 4  # a search after a rejection commits at most this many token sets

    def with_overrides(self, values: dict[str, Any]) -> "RainSettings":
        """A copy with ``values`` applied; unknown keys or wrong types raise ValueError."""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown RAIN setting {key!r} (known: {', '.join(sorted(known))})")
            current = getattr(self, key)
            try:
                if isinstance(current, bool):
                    if isinstance(value, str):
                        value = value.strip().lower() in ("1", "true", "yes", "on")
                    clean[key] = bool(value)
                elif isinstance(current, tuple):
                    if isinstance(value, str):
                        value = [int(v) for v in value.replace(",", " ").split()]
                    clean[key] = tuple(int(v) for v in value)
                else:
                    clean[key] = type(current)(value)
            except (TypeError, ValueError):
                raise ValueError(f"RAIN setting {key!r} needs a {type(current).__name__}, got {value!r}") from None
        if clean.get("score", self.score) not in ("vote", "soft", "single"):
            raise ValueError("RAIN setting 'score' must be 'vote', 'soft' or 'single'")
        if clean.get("commit", self.commit) not in ("visits", "value"):
            raise ValueError("RAIN setting 'commit' must be 'visits' or 'value'")
        if clean.get("loop", self.loop) not in ("tree", "draft"):
            raise ValueError("RAIN setting 'loop' must be 'tree' or 'draft'")
        return replace(self, **clean)


#: Named profiles. ``fast`` (the default) drafts clauses and searches only where the judge objects
#: (search/fast.py); ``paper`` is the reference code's HH constants, and ``harmless``, ``adversarial``
#: and ``truthful`` are the reference code's constants per experiment (``harmless`` = ``paper``).
PROFILES: dict[str, dict[str, Any]] = {
    "fast": {"loop": "draft", "commit": "value", "score": "soft", "calibrate": True, "accept": -0.5,
             "hold": -0.75, "rewind_further": -1.0, "T": 6, "min_searches": 2, "T_m": 2, "V": 0.0,
             "min_clause_tokens": 16, "first_draft_tokens": 4,
             "root_children": 6, "n_children": 5, "cand_tries": 4, "rollout_max_tokens": 16},
    "paper": {},
    "harmless": {},
    "adversarial": {"T_m": 5, "cand_temp": 2.0, "cand_tries": 19},
    "truthful": {"T_m": 16},
}

DEFAULT_PROFILE = "fast"

#: The objective each profile judges with by default.
PROFILE_OBJECTIVE = {"fast": "harmless", "paper": "harmless", "harmless": "harmless",
                     "adversarial": "harmless", "truthful": "truthful"}


def profile_settings(name: str) -> RainSettings:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    return RainSettings().with_overrides(PROFILES[name])


@dataclass
class StopRule:
    """When an answer ends: an end-of-generation token, a new-turn marker in the text, or length."""

    max_tokens: int = 256
    stop_strings: list[str] = field(default_factory=list)
