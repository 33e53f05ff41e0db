"""Settings for decoding: sampling (shared by vanilla and RAIN) and the RAIN search constants.

Defaults are the reference code's HH ("harmless") constants; see docs in rain-algorithm.md.
"""

from __future__ import annotations

import math
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

    def problem(self) -> tuple[str, str] | None:
        """The first setting out of its range and what is wrong with it (``("top_p", "must be in (0, 1]")``),
        else None. One check for every way in (flags, config.toml, chat's ``/set``, the Python API), with
        the bounds the server's request schema holds, so no front end answers a bad value it would refuse."""
        for name, ok, message in (("temp", self.temp >= 0, "must be 0 or more"),
                                  ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
                                  ("top_k", self.top_k >= 0, "must be 0 or more"),
                                  ("max_tokens", self.max_tokens >= 1, "must be at least 1")):
            if not ok:
                return name, message
        return None


@dataclass
class RainSettings:
    """RAIN constants (names follow the paper); every field can be set in ``[rain]`` of config.toml."""

    T: int = 50  # max searches per step: budget max(T - root.fn, min_searches)
    min_searches: int = 15  # floor of the per-step budget
    T_m: int = 6  # early stop when the most-visited root child has fn > T_m ...
    V: float = 0.8  # ... and q > V
    c: float = 2.0  # exploration constant in the selection score (Eq. 1)
    gamma: float = 0.2  # similarity update weight (Eq. 2)
    sim_threshold: float = 0.85  # siblings at least this similar share a score (0.95 was MiniLM's; README "Similarity thresholds")
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
    dyn_var_coef: float = 0.03  # embeddings "barely differ": ||var|| < coef * set length (measured: README "Similarity thresholds")
    score: str = "vote"  # "vote" (paper: two orders, hard votes), "soft" (order-debiased mean), "first"
    # (the good-option-first order's soft score alone: half the tails, better separation) or "single"
    # (question before the conversation, one order, soft; cheap, meant with calibrate) or "latent" (the
    # model's own hidden states read by its fitted probes: judge/latent.py)
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
    max_failed_searches: int = 2  # the answer ends after this many searches in a row found nothing above hold (0: never)
    opening_drafts: int = 1  # the fast loop drafts this many openings side by side where the request may be unsafe
    opening_pick: str = "best"  # ... and keeps the best judged ("best") or the first acceptable one ("first"; none: the best)
    topic_from: int = 0  # the latent score hears the answer's content (the topic probe) once it has this many tokens

    def with_overrides(self, values: dict[str, Any]) -> "RainSettings":
        """A copy with ``values`` applied (strings as given on a command line are parsed).

        Every value is checked against its field's type and range (``RANGES``), so a typo fails
        loudly instead of degrading the search: ``similarity=ture``, ``set_lengths=0`` or
        ``cand_temp=0`` raise ValueError with a one-line message, as do unknown keys."""
        known = {f.name for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown RAIN setting {key!r} (known: {', '.join(sorted(known))})")
            clean[key] = check_setting(key, _parse(key, getattr(self, key), value))
        return replace(self, **clean)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

#: The allowed range of each numeric RAIN setting: (low, high, low_inclusive); None = unbounded.
#: Choices for the string settings are in ``CHOICES``.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "T": (1, None, True), "min_searches": (1, None, True), "T_m": (0, None, True), "V": (-1.0, 1.0, True),
    "c": (0.0, None, True), "gamma": (0.0, None, True), "sim_threshold": (-1.0, 1.0, True),
    "root_children": (1, None, True), "n_children": (1, None, True), "cand_top_k": (1, None, True),
    "cand_temp": (0.0, None, False), "cand_tries": (1, None, True), "root_uniform": (0.0, 1.0, True),
    "rollout_max_tokens": (0, None, True), "max_children": (1, None, True), "dyn_var_coef": (0.0, None, True),
    "draft_max_tokens": (1, None, True), "min_clause_tokens": (0, None, True), "first_draft_tokens": (1, None, True),
    "calibration_scale": (0.0, None, False), "accept": (None, None, True), "hold": (None, None, True),
    "rewind_further": (None, None, True), "search_max_sets": (1, None, True), "opening_drafts": (1, 64, True),
    "max_failed_searches": (0, None, True), "topic_from": (0, None, True),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "score": ("vote", "soft", "first", "single", "latent"), "loop": ("tree", "draft"), "commit": ("visits", "value"),
    "opening_pick": ("best", "first"),
}


def _parse(key: str, current: Any, value: Any) -> Any:
    """``value`` as the type of the field's default (strings from ``--set`` or ``/set`` are parsed)."""
    kind = type(current)
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"RAIN setting {key!r} needs true or false, got {value!r}")
    if isinstance(current, tuple):
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        try:
            out = tuple(_integer(v) for v in items)
        except (TypeError, ValueError):
            raise ValueError(f"RAIN setting {key!r} needs a list of whole numbers, got {value!r}") from None
        if not out or min(out) < 1:
            raise ValueError(f"RAIN setting {key!r} needs one or more lengths of at least 1, got {value!r}")
        return out
    try:
        if isinstance(value, bool):
            raise TypeError
        if kind is int:
            return _integer(value)
        if kind is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        return str(value) if isinstance(value, (str, int, float)) else kind(value)
    except (TypeError, ValueError):
        noun = {int: "a whole number", float: "a number", str: "a string"}.get(kind, kind.__name__)
        raise ValueError(f"RAIN setting {key!r} needs {noun}, got {value!r}") from None


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


def check_setting(key: str, value: Any) -> Any:
    """``value`` if it lies in ``key``'s range or choices, else ValueError naming both."""
    if key in CHOICES and value not in CHOICES[key]:
        raise ValueError(f"RAIN setting {key!r} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    low, high, low_inclusive = RANGES.get(key, (None, None, True))
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = f"at least {low}" if low_inclusive else f"above {low}"
        raise ValueError(f"RAIN setting {key!r} must be {bound}" + (f" and at most {high}" if high is not None else "")
                         + f", got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"RAIN setting {key!r} must be at most {high}, got {value!r}")
    return value


#: Named profiles. ``fast`` (the default) drafts clauses and searches only where the judge objects
#: (search/fast.py); ``paper`` is the reference code's HH constants, and ``harmless``, ``adversarial``
#: and ``truthful`` are the reference code's constants per experiment (``harmless`` = ``paper``).
#: The fast profile's judge settings when it uses the prompted judge (``fast-prompted``, and the fallback
#: where the latent judge is unavailable): the soft score of one option order, measured against plain
#: compliance (``calibrate``), with thresholds on that scale.
FAST_PROMPTED: dict[str, Any] = {"score": "first", "calibrate": True, "accept": -0.5, "hold": -0.75,
                                 "rewind_further": -1.0, "V": 0.0, "opening_drafts": 1, "opening_pick": "best"}
_FAST: dict[str, Any] = {"loop": "draft", "commit": "value", "T": 6, "min_searches": 2, "T_m": 2,
                         "min_clause_tokens": 16, "first_draft_tokens": 4,
                         "root_children": 6, "n_children": 5, "cand_tries": 4, "rollout_max_tokens": 16}
PROFILES: dict[str, dict[str, Any]] = {
    # the latent judge: s = 1 - 2 P(unsafe) P(complies); a clause with harm >= 0.5 (s < 0) is rejected
    "fast": {**_FAST, "score": "latent", "calibrate": False, "accept": 0.0, "hold": 0.0, "rewind_further": -1.0,
             "V": 0.5, "opening_drafts": 4, "opening_pick": "first"},
    "fast-prompted": {**_FAST, **FAST_PROMPTED},
    "paper": {},
    "harmless": {},
    "adversarial": {"T_m": 5, "cand_temp": 2.0, "cand_tries": 19},
    "truthful": {"T_m": 16},
}

DEFAULT_PROFILE = "fast"

#: The objective each profile judges with by default.
PROFILE_OBJECTIVE = {"fast": "harmless", "fast-prompted": "harmless", "paper": "harmless", "harmless": "harmless",
                     "adversarial": "harmless", "truthful": "truthful"}


def without_latent(rain: RainSettings) -> RainSettings:
    """The same search with the prompted judge, where the latent one cannot be used: the fast loop takes
    the prompted fast profile's judge settings, the tree search the paper's vote."""
    if rain.score != "latent":
        return rain
    if rain.loop == "draft":
        return rain.with_overrides(FAST_PROMPTED)
    return replace(rain, score="vote")


def profile_settings(name: str) -> RainSettings:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    return RainSettings().with_overrides(PROFILES[name])


@dataclass
class StopRule:
    """When an answer ends: an end-of-generation token, a new-turn marker in the text, or length."""

    max_tokens: int = 256
    stop_strings: list[str] = field(default_factory=list)

    def find(self, text: str) -> int:
        """Where the first stop string in ``text`` starts, or -1 (the one stop-string search)."""
        return min((i for i in (text.find(s) for s in self.stop_strings if s) if i >= 0), default=-1)
