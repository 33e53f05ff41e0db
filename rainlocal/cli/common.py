"""What every answering command does first: find the model, load it (spinner on stderr), and
handle Ctrl-C the way users expect (first stops the answer, second exits 130)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

from rainlocal.cli.options import ModelSettings

stderr = Console(stderr=True, highlight=False)


def load_engine(ms: ModelSettings, model: str | None = None, *, quiet: bool = False):
    """Resolve (pulling if needed) and load a model; a spinner shows on a terminal.

    With ``--engine URL`` the answering model is the one a llama.cpp server at URL holds (and
    ``--judge URL`` puts the judge on a server too): ``server_engine`` connects, failing at once
    when nothing answers there. With ``RAINLOCAL_ENGINE_FACTORY`` set, that factory makes the engine
    (see ``rainlocal.api``)."""
    from pathlib import Path

    from rainlocal.api import engine_factory, make_engine
    from rainlocal.engine.llama_server import is_engine_url

    name = model if model is not None else (ms.engine_urls[0] if ms.engine_urls else ms.model)
    if is_engine_url(name):
        return server_engine(ms, name, quiet=quiet)
    if engine_factory() is None:
        from rainlocal.catalog import resolve_model

        name = resolve_model(name, quiet=quiet)  # pulls first, with its own progress display
    show = not quiet and stderr.is_terminal
    status = stderr.status(f"Loading {Path(str(name)).name}…", spinner="dots") if show else _null()
    with status:
        return make_engine(name, n_ctx=ms.ctx_size, n_gpu_layers=ms.gpu_layers, n_threads=ms.threads,
                           verbose=ms.verbose)


def load_model(ms: ModelSettings):
    """The answering engine (and a separate ``--judge`` engine, if any) as an ``api.Model``."""
    from rainlocal.api import Model

    engine = load_engine(ms)
    judge = load_engine(ms, ms.judge) if ms.judge else None
    return Model(engine, judge_engine=judge, chat_format=ms.chat_format)


def server_engine(ms: ModelSettings, url: str, *, quiet: bool = False):
    """Connect to the llama.cpp server at ``url`` (one line and exit 1 when nothing ready answers)."""
    from rainlocal.engine.llama_server import LlamaServerEngine

    return LlamaServerEngine(url, n_ctx=ms.ctx_size or None)


def note_engine_limits(engine) -> None:
    """Before RAIN on an inference server without embeddings: say once what the search does without."""
    if getattr(engine, "can_embed", True):
        return
    stderr.print(f"note: {getattr(engine, 'url', 'the server')} gives no embeddings, so RAIN's similarity updates "
                 "and dynamic node addition are off (start llama-server with --embeddings --pooling none)",
                 markup=False, highlight=False, soft_wrap=True)


def load_generator(ms: ModelSettings):
    """The answering engine (and a separate ``--judge`` engine, if any) wrapped for generation."""
    from rainlocal.errors import UsageError

    if len(ms.engine_urls) > 1:
        raise UsageError("this command takes one --engine URL (eval spreads over several)")
    return load_model(ms).generator


def prepare_judge(generator, gen) -> None:
    """Before the first RAIN answer: restore the judge's fixed prompt from the cache (``warm_judge``), and,
    once per judge model, objective and score, say in one stderr line when the self-evaluation cannot tell
    a refusal from compliance (``judge.signal_check``), and how to add a judge."""
    if gen.mode != "rain":
        return
    note_engine_limits(generator.engine)
    from rainlocal.judge.signal_check import cached_check
    from rainlocal.paths import cache_dir
    from rainlocal.generate import wants_latent
    from rainlocal.search.settings import without_latent

    if wants_latent(gen):
        if ensure_latent(generator):
            return
        gen.rain = without_latent(gen.rain)
    generator.warm_judge(gen, cache_dir())
    if gen.objective != "harmless":
        return

    judge = generator.judge_engine
    result = cached_check(judge, generator.objective(gen.objective), gen.rain.score, cache_dir() / "judge-signal.json")
    if result.fresh and result.uninformative:
        name = getattr(getattr(judge, "path", None), "name", "the judge")
        stderr.print(f"note: {name} ranked a refusal above compliance in only {result.right} of {result.total} "
                     "test cases, so its self-evaluation carries little signal; add a judge with "
                     "--judge qwen2.5-coder-1.5b (or any GGUF)", markup=False, highlight=False, soft_wrap=True)


_said_latent: set[str] = set()


def ensure_latent(generator) -> bool:
    """Whether the latent judge can answer: the model's probes are found, or (in a terminal, for a model
    that has none yet) fitted now with a progress bar, where that fits the first-use budget
    (``first_fit``). Otherwise one stderr line says why and how, once."""
    probes, why = generator.latent()
    if probes is not None:
        return True
    engine = generator.judge_engine
    if why.startswith("no latent probes") and stderr.is_terminal and getattr(engine, "can_read_states", False):
        from rainlocal.cli.first_fit import fit_on_first_use

        def say(line: str) -> None:
            stderr.print(line, markup=False, highlight=False, soft_wrap=True)

        path = fit_on_first_use(engine, say)
        if path is None:
            return False  # (it said why, and how to fit them)
        generator.forget_latent()
        probes, why = generator.latent()
        if probes is not None:
            say(f"probes saved in {path}")
            return True
    if why not in _said_latent:
        _said_latent.add(why)
        stderr.print(f"note: {why}; the prompted judge answers instead", markup=False, highlight=False, soft_wrap=True)
    return False


@contextmanager
def _null() -> Iterator[None]:
    yield


class Interrupts:
    """First Ctrl-C asks the current answer to stop (the search checks ``requested``); a second
    Ctrl-C before ``clear()`` raises KeyboardInterrupt, which the CLI turns into exit 130."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous = None
        self._held = False
        self._pending = False

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    def _handler(self, signum, frame) -> None:  # noqa: ANN001
        if self._event.is_set():
            if self._held:
                self._pending = True  # raised when the shielded save is done
                return
            raise KeyboardInterrupt
        self._event.set()

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Finish saving work first: a second Ctrl-C inside takes effect when the block ends."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
            if self._pending:
                self._pending = False
                raise KeyboardInterrupt

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
