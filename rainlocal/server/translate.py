"""One API request -> the settings of one answer, through the same settings code the CLI uses.

The server's command line (``-n``, ``--temp``, ``--profile``, ``-T``, ``--set``, config.toml) gives the
defaults; a request's OpenAI fields and its ``rain`` field override them for that answer only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from rainlocal.errors import RainlocalError
from rainlocal.generate import GenerationSettings
from rainlocal.server.protocol import APIError, ChatRequest, CompletionRequest
from rainlocal.search.settings import PROFILE_OBJECTIVE, PROFILES, RainSettings


@dataclass
class Defaults:
    """What ``rainlocal serve`` was started with."""

    gen: GenerationSettings  # resolve_settings() of the command line and config.toml
    opts: dict[str, Any]  # the command line's options (RAIN flags apply to a request's profile too)
    system: str | None  # -s: the system prompt of requests that bring none
    objectives: tuple[str, ...]  # objectives a request may name (the built-in ones and the server's own)


@dataclass
class Answer:
    """Everything the worker needs for one answer."""

    messages: list[dict[str, str]]
    gen: GenerationSettings
    stop: list[str]
    raw: str | None = None  # /v1/completions: the prompt as given, no chat template


def chat_answer(req: ChatRequest, d: Defaults) -> Answer:
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
    if messages[-1]["role"] != "user":
        raise APIError(400, "messages: the last message must be the user's (rainlocal answers it)", param="messages")
    if d.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": d.system})
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return Answer(messages=messages, gen=generation(req, d, max_tokens), stop=req.stop_list())


def completion_answer(req: CompletionRequest, d: Defaults) -> Answer:
    text = req.prompt_text()
    if not text:
        raise APIError(400, "prompt: the prompt is empty", param="prompt")
    # The self-evaluation judges a conversation; a text completion is judged as a request to continue.
    messages = [{"role": "user", "content": text}]
    return Answer(messages=messages, gen=generation(req, d, req.max_tokens), stop=req.stop_list(), raw=text)


def generation(req, d: Defaults, max_tokens: int | None) -> GenerationSettings:
    base = d.gen
    s = base.sampling
    sampling = replace(
        s,
        temp=s.temp if req.temperature is None else float(req.temperature),
        top_p=s.top_p if req.top_p is None else float(req.top_p),
        top_k=s.top_k if req.top_k is None else int(req.top_k),
        seed=s.seed if req.seed is None else int(req.seed),
        max_tokens=s.max_tokens if max_tokens is None else int(max_tokens),
    )
    rain = req.rain
    if rain is False:
        return replace(base, mode="vanilla", sampling=sampling)
    if rain is None:
        return replace(base, sampling=sampling)
    if rain is True:
        return replace(base, mode="rain", sampling=sampling)
    return _rain_request(dict(rain), base, sampling, d)


def _rain_request(values: dict[str, Any], base: GenerationSettings, sampling, d: Defaults) -> GenerationSettings:
    from rainlocal.cli.options import rain_settings

    profile = values.pop("profile", base.profile)
    if profile not in PROFILES:
        raise APIError(400, f"rain.profile: unknown profile {profile!r} (known: {', '.join(PROFILES)})",
                       param="rain.profile")
    objective = values.pop("objective", None)
    if objective is None:
        objective = base.objective if profile == base.profile else PROFILE_OBJECTIVE.get(profile, base.objective)
    if objective not in d.objectives:
        raise APIError(400, f"rain.objective: unknown objective {objective!r} (known: {', '.join(d.objectives)})",
                       param="rain.objective")
    _check_types(values)
    try:
        settings = rain_settings(d.opts, profile).with_overrides(values)
    except (RainlocalError, ValueError) as e:
        raise APIError(400, f"rain: {e}", param="rain") from None
    return replace(base, mode="rain", sampling=sampling, rain=settings, profile=profile, objective=objective)


def _check_types(values: dict[str, Any]) -> None:
    """JSON numbers the settings code would quietly round or accept as text are refused here
    (``"T": 20.5``, ``"T": true``), so a request gets exactly the search it asked for."""
    kinds = {f.name: type(f.default) for f in fields(RainSettings)}
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is None:
            continue  # the settings code names the unknown key and lists the known ones
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
            tuple: isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
        }.get(kind, True)
        if not ok:
            want = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                    tuple: "a list of integers"}[kind]
            raise APIError(400, f"rain.{key}: needs {want}, got {value!r}", param=f"rain.{key}")
