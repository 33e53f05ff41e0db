"""The Python API beside the CLI, in the manner of ``llm``'s ``model.prompt() -> Response``::

    import rainlocal

    model = rainlocal.load("smollm2-135m", judge="qwen2.5-coder-0.5b")
    response = model.answer("How do I pick a lock?", profile="paper", T=10, max_tokens=64)
    for chunk in response:          # committed text, as the search commits it
        print(chunk, end="", flush=True)
    print(response.stats["searches"], response.stop_reason)

    model.answer([{"role": "user", "content": "Hi"}]).text   # runs to the end, then the whole text

``answer`` takes RAIN constants (``T``, ``gamma``, ``set_lengths``…) as keyword arguments, checked
exactly as ``--set`` checks them, and the sampling settings (``temp``, ``top_p``, ``top_k``,
``seed``, ``max_tokens``). The CLI's ``run`` answers through this module.

Engines are made by ``make_engine``: the real llama.cpp engine, or, when the environment variable
``RAINLOCAL_ENGINE_FACTORY=module:callable`` names a factory, whatever that callable returns for
``(model, n_ctx=..., n_gpu_layers=..., n_threads=..., verbose=...)``. Tests use it to run the CLI on
the scripted fake engine in milliseconds.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Sequence

from rainlocal.errors import UsageError
from rainlocal.search.events import AnswerStream

ENGINE_FACTORY_ENV = "RAINLOCAL_ENGINE_FACTORY"
SAMPLING_KEYS = ("temp", "top_p", "top_k", "seed", "max_tokens")


def engine_factory() -> Callable[..., Any] | None:
    """The factory named by ``RAINLOCAL_ENGINE_FACTORY`` (``module:callable``), or None."""
    spec = os.environ.get(ENGINE_FACTORY_ENV, "").strip()
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"{ENGINE_FACTORY_ENV} must be module:callable, got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"{ENGINE_FACTORY_ENV}={spec}: {e}") from None


def make_engine(model: str | os.PathLike[str] | None, *, n_ctx: int = 4096, n_gpu_layers: int = -1,
                n_threads: int | None = None, verbose: bool = False, quiet: bool = True) -> Any:
    """An engine for ``model`` (path or catalogue alias, pulled if needed; None = the default)."""
    factory = engine_factory()
    if factory is not None:
        return factory(model, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, verbose=verbose)
    from rainlocal.catalog import resolve_model
    from rainlocal.engine.llama import LlamaEngine

    path = resolve_model(None if model is None else str(model), quiet=quiet)
    return LlamaEngine(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, verbose=verbose)


class Response(AnswerStream):
    """One answer. Iterating yields the committed text chunks as the search commits them (the answer
    is produced lazily, once); ``text``, ``stats``, ``stop_reason`` and ``tokens`` run it to the end."""

    @property
    def text(self) -> str:
        return self.finish().text

    @property
    def stats(self) -> dict[str, Any]:
        return self.finish().stats

    @property
    def stop_reason(self) -> str:
        return self.finish().stop_reason

    @property
    def tokens(self) -> list[int]:
        return self.finish().tokens

    def __str__(self) -> str:
        return self.text


class Model:
    """A loaded answering model (and an optional separate judge); see the module docstring."""

    def __init__(self, engine: Any, *, judge_engine: Any = None, chat_format: str | None = None):
        from rainlocal.generate import Generator

        self.generator = Generator(engine, chat_format, judge_engine=judge_engine)

    @property
    def engine(self) -> Any:
        return self.generator.engine

    def settings(self, *, profile: str | None = None, vanilla: bool = False, objective: str | None = None,
                 **values: Any):
        """The ``GenerationSettings`` for ``answer``'s keyword arguments (RAIN constants checked as
        ``--set`` checks them: a bad value raises UsageError)."""
        from rainlocal.generate import GenerationSettings
        from rainlocal.search.settings import DEFAULT_PROFILE, PROFILE_OBJECTIVE, SamplingSettings, profile_settings

        profile = profile or DEFAULT_PROFILE
        sampling = {k: values.pop(k) for k in SAMPLING_KEYS if k in values}
        try:
            rain = profile_settings(profile).with_overrides(values)  # an unknown profile: ValueError
            samp = SamplingSettings(**{k: type(getattr(SamplingSettings(), k))(v) for k, v in sampling.items()})
        except (TypeError, ValueError) as e:
            raise UsageError(str(e)) from None
        bad = samp.problem()
        if bad:
            raise UsageError(" ".join(bad))
        return GenerationSettings(mode="vanilla" if vanilla else "rain", sampling=samp, rain=rain, profile=profile,
                                  objective=objective or PROFILE_OBJECTIVE.get(profile, "harmless"))

    def answer(self, prompt: str | Sequence[dict[str, str]], *, system: str | None = None, settings: Any = None,
               should_stop: Callable[[], bool] | None = None, on_event: Callable[[Any], None] | None = None,
               **kwargs: Any) -> Response:
        """Answer a prompt string or a list of ``{"role", "content"}`` messages (OpenAI shape).

        ``settings`` (a ``GenerationSettings``) replaces the keyword settings; ``on_event`` sees every
        search event (steps, checks, rewinds) for a live view; ``should_stop`` interrupts the answer."""
        from rainlocal.engine.formats import build_messages

        gen = settings if settings is not None else self.settings(**kwargs)
        if isinstance(prompt, str):
            messages = build_messages(prompt, system)
        else:
            messages = [dict(m) for m in prompt]
            if system and not any(m.get("role") == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": system})
        self.generator.prompt(messages)  # a prompt longer than the context fails here, before any work
        return Response(self.generator.stream(messages, gen, should_stop=should_stop), on_event)

    def close(self) -> None:
        for e in {id(self.generator.engine): self.generator.engine,
                  id(self.generator.judge_engine): self.generator.judge_engine}.values():
            close = getattr(e, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(model: str | os.PathLike[str] | None = None, *, judge: str | os.PathLike[str] | None = None,
         ctx_size: int = 4096, gpu_layers: int = -1, threads: int | None = None, chat_format: str | None = None,
         verbose: bool = False) -> Model:
    """Load ``model`` (a GGUF path or catalogue alias; None = the catalogue default) and, if given, a
    separate ``judge`` model for the self-evaluation."""
    kw = dict(n_ctx=ctx_size, n_gpu_layers=gpu_layers, n_threads=threads, verbose=verbose)
    engine = make_engine(model, **kw)
    judge_engine = make_engine(judge, **kw) if judge is not None else None
    return Model(engine, judge_engine=judge_engine, chat_format=chat_format)
