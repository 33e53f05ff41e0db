"""``--strategies``, ``--best-of`` and ``--safety-prompt``: the strategies ``eval`` and ``bench`` compare,
built from the command line (names and what they run: ``rainlocal.evals.strategies``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import click

from rainlocal.errors import UsageError
from rainlocal.evals.strategies import SAFETY_PROMPT, Strategy, parse_names, split_spec
from rainlocal.generate import GenerationSettings


def parse_best_of(value: str | None) -> tuple[bool, int | None]:
    """``--best-of``: None (off), "auto" (match RAIN's work) or a positive integer."""
    if value is None:
        return False, None
    v = value.strip().lower()
    if v == "auto":
        return True, None
    try:
        n = int(v)
    except ValueError:
        raise UsageError(f"--best-of must be a positive integer or 'auto', got {value!r}") from None
    if n < 1:
        raise UsageError("--best-of must be at least 1")
    return True, n


def strategy_options(default: str) -> Callable:
    """The options that choose strategies (``default``: the ``--strategies`` of the command)."""
    def deco(f: Callable) -> Callable:
        for opt in reversed([
            click.option("--strategies", "strategies", default=default, show_default=True,
                         help="Comma-separated strategies, one report row each: vanilla, system, self-check, "
                              "rain (= --profile), a RAIN profile name (fast, paper, ...), best-of-n (needs --best-of); "
                              "NAME[K=V,...] gives one RAIN strategy its own constants, e.g. paper[T=10,min_searches=4]."),
            click.option("--safety-prompt", "safety_prompt", default=None, metavar="TEXT",
                         help="The system strategy's safety system prompt (default: rainlocal's own, see README)."),
            click.option("--best-of", "best_of", default=None, metavar="N|auto",
                         help="best-of-n: N samples by self-evaluation, or 'auto' to match the work of the RAIN "
                              "strategy before it, per prompt."),
            click.option("--best-of-max", "best_of_max", type=int, default=32,
                         help="Upper bound on N for --best-of auto (default 32)."),
        ]):
            f = opt(f)
        return f

    return deco


def build_strategies(opts: dict[str, Any], gen: GenerationSettings) -> tuple[dict[str, Strategy], tuple[bool, int | None]]:
    """The strategies of ``opts`` in order (``best-of-n`` appended when only ``--best-of`` asks for it)
    and the parsed ``--best-of``."""
    from rainlocal.cli.options import rain_settings
    from rainlocal.search.settings import PROFILE_OBJECTIVE, PROFILES

    if opts["best_of_max"] < 1:
        raise UsageError("--best-of-max must be at least 1")
    best_of = parse_best_of(opts["best_of"])
    names = parse_names(opts["strategies"], list(PROFILES))
    if best_of[0] and "best-of-n" not in names:
        names.append("best-of-n")
    if "best-of-n" in names and not best_of[0]:
        raise UsageError("the best-of-n strategy needs --best-of N|auto")
    if opts.get("safety_prompt") is not None and not opts["safety_prompt"].strip():
        raise UsageError("--safety-prompt must not be empty")
    if opts.get("safety_prompt") and "system" not in names:
        raise UsageError("--safety-prompt is the system strategy's prompt; add system to --strategies")
    out: dict[str, Strategy] = {}
    for name in names:
        base, overrides = split_spec(name)
        if base in ("vanilla", "system"):
            out[name] = Strategy(name, name, replace(gen, mode="vanilla"),
                                 safety_prompt=(opts.get("safety_prompt") or SAFETY_PROMPT) if name == "system" else None)
            continue
        if base in ("self-check", "best-of-n"):
            out[name] = Strategy(name, name, gen)
            continue
        # RAIN: --profile's ("rain") or a named profile, each maybe with its own constants in brackets
        settings = replace(gen, mode="rain")
        if base != "rain":
            objective = opts.get("objective") or PROFILE_OBJECTIVE.get(base, gen.objective)
            settings = replace(settings, profile=base, objective=objective, rain=rain_settings(opts, base))
        if overrides:
            try:
                settings = replace(settings, rain=settings.rain.with_overrides(overrides))
            except ValueError as e:
                raise UsageError(f"strategy {name!r}: {e}") from None
        out[name] = Strategy(name, "rain", settings)
    if best_of[0] and best_of[1] is None:
        before = names[: names.index("best-of-n")]
        if not any(out[n].is_rain for n in before):
            raise UsageError("--best-of auto matches the work of a RAIN strategy listed before best-of-n")
    return out, best_of
