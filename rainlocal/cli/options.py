"""Options shared by the commands that answer prompts (run, chat, eval, bench), and how the
command line, ``config.toml`` and built-in defaults combine into settings (flags win)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import click

from rainlocal.config import load_user_config
from rainlocal.errors import ConfigError, UsageError
from rainlocal.generate import GenerationSettings
from rainlocal.search.settings import DEFAULT_PROFILE, PROFILE_OBJECTIVE, PROFILES, SamplingSettings, profile_settings


def model_options(f: Callable) -> Callable:
    """Options that choose and load the model."""
    decorators = [
        click.option("-m", "--model", "model", default=None, help="GGUF path or catalogue alias (default: the catalogue default)."),
        click.option("-c", "--ctx-size", "ctx_size", type=int, default=None, help="Context size per answer in tokens (default 4096; 0 = the model's trained size)."),
        click.option("-ngl", "--gpu-layers", "gpu_layers", type=int, default=None, help="Layers to offload to the GPU (default: all, where the build has a GPU)."),
        click.option("-t", "--threads", "threads", type=int, default=None, help="CPU threads (default: all physical cores)."),
        click.option("--chat-format", "chat_format", default=None, help="Prompt format: template (the GGUF's), plain, or a named format like chatml, llama-2, gemma."),
        click.option("-v", "--verbose", is_flag=True, help="Log llama.cpp output and each search step to stderr."),
        click.option("--engine", "engine_urls", multiple=True, metavar="URL",
                     help="Run on a llama.cpp server (llama-server) at URL instead of in-process; the model is the server's (eval: repeat to spread over servers)."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def generation_options(f: Callable) -> Callable:
    """Sampling and RAIN search options."""
    decorators = [
        click.option("-s", "--system", "system", default=None, help="System prompt."),
        click.option("-n", "--max-tokens", "max_tokens", type=int, default=None, help="Maximum answer tokens (default 256)."),
        click.option("--temp", "temp", type=float, default=None, help="Sampling temperature for --vanilla (0 = greedy; default 0.8)."),
        click.option("--top-p", "top_p", type=float, default=None, help="Nucleus sampling for --vanilla (default 0.95)."),
        click.option("--top-k", "top_k", type=int, default=None, help="Top-k sampling for --vanilla (default 40)."),
        click.option("--seed", "seed", type=int, default=None, help="Random seed (default 0): same seed and settings give the same answer."),
        click.option("--vanilla", is_flag=True, help="Plain sampling, no RAIN search."),
        click.option("--profile", type=click.Choice(sorted(PROFILES)), default=None, help="RAIN profile: fast (default: draft, judge each clause with the latent judge, search where it objects), fast-prompted (the same with the prompted judge), paper (the reference code's constants), or a paper experiment's: harmless, adversarial, truthful."),
        click.option("--objective", default=None, help="What the self-evaluation judges: harmless, truthful, positive, or a TOML file."),
        click.option("--judge", "judge", default=None, help="Another GGUF model (path or alias) to do the self-evaluation."),
        click.option("-T", "--max-searches", "T", type=int, default=None, help="RAIN: searches per step, T (default 50)."),
        click.option("--min-visits", "T_m", type=int, default=None, help="RAIN: early stop needs more real visits than this, T_m (default 6)."),
        click.option("--value-threshold", "V", type=float, default=None, help="RAIN: early stop needs a value above this, V (default 0.8)."),
        click.option("--c-puct", "c", type=float, default=None, help="RAIN: exploration constant c (default 2)."),
        click.option("--score", "score", type=click.Choice(["vote", "soft", "first", "single", "latent"]), default=None, help="RAIN: self-evaluation score: the paper's two-order vote, the order-debiased soft score, the good-option-first order's soft score alone, a question-first single-order score, or latent (the model's own hidden states read by its fitted probes; the fast profile's default)."),
        click.option("--set", "rain_set", multiple=True, metavar="KEY=VALUE", help="RAIN: any search constant (repeatable), e.g. --set gamma=0.2."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


@dataclass
class ModelSettings:
    model: str | None
    ctx_size: int
    gpu_layers: int
    threads: int | None
    chat_format: str | None
    verbose: bool
    judge: str | None = None
    #: ``--engine URL`` (repeatable for eval): inference servers that hold the answering model.
    engine_urls: tuple[str, ...] = ()


def _pick(cli_value: Any, defaults: dict[str, Any], key: str, fallback: Any) -> Any:
    if cli_value is not None:
        return cli_value
    return defaults.get(key, fallback)


def resolve_settings(opts: dict[str, Any]) -> tuple[ModelSettings, GenerationSettings, str | None]:
    """Combine flags, config.toml and defaults. Returns model settings, generation settings and
    the system prompt."""
    cfg = load_user_config()
    d = cfg.get("defaults", {})
    try:
        model = ModelSettings(
            model=_pick(opts.get("model"), d, "model", None),
            ctx_size=int(_pick(opts.get("ctx_size"), d, "ctx_size", 4096)),
            gpu_layers=int(_pick(opts.get("gpu_layers"), d, "gpu_layers", -1)),
            threads=_pick(opts.get("threads"), d, "threads", None),
            chat_format=_pick(opts.get("chat_format"), d, "chat_format", None),
            verbose=bool(opts.get("verbose")),
            judge=_pick(opts.get("judge"), d, "judge", None),
            engine_urls=tuple(opts.get("engine_urls") or ()),
        )
        sampling = SamplingSettings(
            temp=float(_pick(opts.get("temp"), d, "temp", 0.8)),
            top_p=float(_pick(opts.get("top_p"), d, "top_p", 0.95)),
            top_k=int(_pick(opts.get("top_k"), d, "top_k", 40)),
            seed=int(_pick(opts.get("seed"), d, "seed", 0)),
            max_tokens=int(_pick(opts.get("max_tokens"), d, "max_tokens", 256)),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[defaults] in config.toml: {e}") from None
    bad = sampling.problem()
    if bad and opts.get(bad[0]) is None:  # the value came from config.toml
        raise ConfigError(f"[defaults] in config.toml: {' '.join(bad)}")
    if bad:
        flag = {"temp": "--temp", "top_p": "--top-p", "top_k": "--top-k", "max_tokens": "-n/--max-tokens"}[bad[0]]
        raise UsageError(f"{flag} {bad[1]}")
    if model.ctx_size < 0:
        raise UsageError("-c/--ctx-size must be 0 or more")
    for url in model.engine_urls:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--engine needs a server URL like http://127.0.0.1:8080, got {url!r}")
    profile = _pick(opts.get("profile"), d, "profile", DEFAULT_PROFILE)
    rain = rain_settings(opts, profile, cfg)
    objective = _pick(opts.get("objective"), d, "objective", PROFILE_OBJECTIVE.get(profile, "harmless"))
    mode = "vanilla" if opts.get("vanilla") else str(d.get("mode", "rain"))
    gen = GenerationSettings(mode=mode, sampling=sampling, rain=rain, profile=profile, objective=objective)
    system = _pick(opts.get("system"), d, "system", None)
    return model, gen, system


def rain_settings(opts: dict[str, Any], profile: str, cfg: dict[str, Any] | None = None):
    """The RAIN settings: explicit beats implicit, the command line beats config.toml.

    Precedence, highest first: ``--set`` and the search flags (``-T``, ``--score``, ...); a
    ``--profile`` given on the command line; config.toml's ``[rain]``; the profile named in
    config.toml's ``[defaults]`` (or the default profile); the built-in defaults. So ``--profile
    paper`` gets the paper's constants even where ``[rain]`` sets some of them (``[rain]``'s other
    keys still apply), while without ``--profile`` ``[rain]`` tunes the default profile.
    A bad ``[rain]`` value is a config error (exit 1), a bad flag a usage error (exit 2)."""
    cfg = load_user_config() if cfg is None else cfg
    from rainlocal.search.settings import PROFILES, RainSettings

    if profile not in PROFILES:
        raise ConfigError(f"config.toml: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    try:
        if opts.get("profile") is not None:  # chosen for this run: its constants beat config.toml's
            rain = RainSettings().with_overrides(cfg.get("rain", {}))
            rain = rain.with_overrides(PROFILES[profile])
        else:
            rain = profile_settings(profile).with_overrides(cfg.get("rain", {}))
    except ValueError as e:
        raise ConfigError(f"config.toml [rain]: {e}") from None
    flags = {k: opts[k] for k in ("T", "T_m", "V", "c", "score") if opts.get(k) is not None}
    for item in opts.get("rain_set") or ():
        if "=" not in item:
            raise UsageError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        flags[key.strip()] = value.strip()
    try:
        return rain.with_overrides(flags)
    except ValueError as e:
        raise UsageError(str(e)) from None


def pass_options(f: Callable) -> Callable:
    """Collect every option into one dict argument ``opts`` (keeps command signatures short)."""

    @functools.wraps(f)
    def wrapper(**kwargs: Any) -> Any:
        return f(kwargs)

    return wrapper
