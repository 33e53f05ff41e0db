"""One answer to one conversation: format, pick the strategy (RAIN or vanilla), run it.

This is the layer between configuration and the search that ``run``, ``chat``, ``eval`` and
``bench`` share, so they all stop, count and time answers the same way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

from rainlocal.engine.formats import ChatFormatter, Message
from rainlocal.errors import PromptTooLongError
from rainlocal.search.events import Commit, Done, Step
from rainlocal.search.settings import RainSettings, SamplingSettings, StopRule


@dataclass
class GenerationSettings:
    """Everything that decides an answer besides the model and the conversation."""

    mode: str = "rain"  # "rain" or "vanilla"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    rain: RainSettings = field(default_factory=RainSettings)
    profile: str = "fast"
    objective: str = "harmless"

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, **asdict(self.sampling)}
        if self.mode == "rain":
            d["profile"] = self.profile
            d["objective"] = self.objective
            d["rain"] = asdict(self.rain)
        return d


def formatter_for(engine, chat_format: str | None = None) -> ChatFormatter:
    """The chat formatter of ``engine``'s model (its template, BOS and EOS; ``chat_format`` overrides)."""
    return ChatFormatter(engine.chat_template, engine.token_text(getattr(engine, "bos_token", None)),
                         engine.token_text(getattr(engine, "eos_token", None)), chat_format)


def wants_latent(settings: GenerationSettings) -> bool:
    """The latent judge is asked for: it judges harm, so only with the harmless objective. (Not tied to the
    mode: best-of-N and self-check score vanilla answers with the same judge.)"""
    return settings.rain.score == "latent" and settings.objective == "harmless"


class Generator:
    """Answers conversations with one loaded engine (and optionally a separate judge engine)."""

    def __init__(self, engine, chat_format: str | None = None, judge_engine=None):
        self.engine = engine
        self.judge_engine = judge_engine or engine
        self.formatter = formatter_for(engine, chat_format)
        self._objectives: dict[str, Any] = {}
        self._latent: tuple[Any, str] | None = None

    def latent(self) -> tuple[Any, str]:
        """The judge engine's probes for the latent judge, or (None, why not in one line)."""
        if self._latent is None:
            from rainlocal.latent import latent_probes

            self._latent = latent_probes(self.judge_engine)
        return self._latent

    def forget_latent(self) -> None:
        """Look the probes up again (after ``rainlocal calibrate`` fitted them)."""
        self._latent = None

    def prompt(self, messages: list[Message], *, raw: str | None = None) -> tuple[list[int], list[str]]:
        """Prompt tokens and new-turn stop strings; refuses prompts that leave no room to answer.

        ``raw`` is a text completion's prompt (``rainlocal serve``'s /v1/completions): tokenized as
        text, with no chat template and no new-turn markers."""
        if raw is not None:
            parts, turn_stops = [(raw, False)], []
        else:
            fp = self.formatter(messages)
            parts, turn_stops = fp.parts, fp.stop
        tokens = self.engine.prompt_tokens(parts)
        if len(tokens) >= self.engine.n_ctx:
            raise PromptTooLongError(
                f"the prompt is {len(tokens)} tokens but the context is {self.engine.n_ctx} tokens "
                "(raise -c/--ctx-size or shorten the prompt)"
            )
        return tokens, turn_stops

    def fit(self, messages: list[Message], room: int) -> tuple[list[Message], int]:
        """Drop the oldest earlier turns until the prompt leaves ``room`` tokens to answer in.

        Keeps the system prompt and the newest user message; returns the messages and how many
        earlier messages were left out. A chat would otherwise stop working once its history
        outgrows the context, which is what a user of a long session hits first."""
        n_ctx = self.engine.n_ctx
        room = max(1, min(room, n_ctx // 2))
        head = [m for m in messages[:1] if m.get("role") == "system"]
        body = messages[len(head):]
        dropped = 0
        while True:
            trial = head + body
            if len(self.engine.prompt_tokens(self.formatter(trial).parts)) + room <= n_ctx or len(body) <= 1:
                return trial, dropped
            # drop whole turns (a user message and the replies after it) so roles still alternate
            cut = 1
            while cut < len(body) - 1 and body[cut].get("role") != "user":
                cut += 1
            body = body[cut:]
            dropped += cut

    def warm_judge(self, settings: GenerationSettings, cache_dir) -> bool:
        """Restore the judge's fixed prompt from ``cache_dir`` (or decode and save it), so that a new
        process's first self-evaluation does not decode it; True when restored from the cache."""
        if settings.mode != "rain" or not hasattr(self.judge_engine, "warm_prefix"):
            return False
        if wants_latent(settings) and self.latent()[0] is not None:
            return False  # no judge prompt to decode
        import hashlib
        from pathlib import Path

        from rainlocal.gguf_info import file_identity
        from rainlocal.judge.self_eval import judge_prefix_sequence

        tokens = judge_prefix_sequence(self.judge_engine, self.objective(settings.objective), settings.rain.score)
        ident = file_identity(getattr(self.judge_engine, "path", "model"))
        digest = hashlib.sha1((ident + ":" + ",".join(map(str, tokens))).encode()).hexdigest()[:16]
        return bool(self.judge_engine.warm_prefix(tokens, Path(cache_dir) / "judge-prefix" / f"{digest}.state"))

    def text_evaluator(self, messages: list[Message], settings: GenerationSettings):
        """The self-evaluation that scores finished answers to ``messages`` (best-of-N, self-check): the
        same judge, objective and score the search would use, latent included."""
        prompt, _ = self.prompt(messages)
        return self._evaluator(messages, prompt, settings)[1]

    def _evaluator(self, messages: list[Message], prompt: list[int], settings: GenerationSettings):
        """The self-evaluation for one answer: the latent judge when asked for and available (else the
        prompted judge, with ``without_latent``'s settings), created before the prompt is decoded so that
        the probe layer's states come out of that decode."""
        from rainlocal.judge.self_eval import SelfEvaluator
        from rainlocal.search.settings import without_latent

        if wants_latent(settings):
            probes, _why = self.latent()
            if probes is not None:
                from rainlocal.judge.latent import LatentEvaluator

                probes = probes.for_request(messages)  # a labelled dev prompt: the fold that left it out

                if self.judge_engine is self.engine:
                    return settings, LatentEvaluator(self.engine, probes, prompt, topic_from=settings.rain.topic_from)
                judge_prompt = self.judge_engine.prompt_tokens(formatter_for(self.judge_engine)(messages).parts)
                return settings, LatentEvaluator(self.judge_engine, probes, judge_prompt, source=self.engine,
                                                 topic_from=settings.rain.topic_from)
            settings = replace(settings, rain=without_latent(settings.rain))
        return settings, SelfEvaluator(self.judge_engine, self.objective(settings.objective), messages,
                                       mode=settings.rain.score)

    def objective(self, name: str):
        from rainlocal.judge.objectives import load_objective

        if name not in self._objectives:
            self._objectives[name] = load_objective(name)
        return self._objectives[name]

    def stream(
        self,
        messages: list[Message],
        settings: GenerationSettings,
        *,
        should_stop: Callable[[], bool] | None = None,
        stop: list[str] | None = None,
        raw: str | None = None,
    ) -> Iterator[Commit | Step | Done]:
        """Yield the strategy's events; the final ``Done`` carries usage and timings in ``stats``.

        ``stop`` adds stop strings to the new-turn markers (an API request's ``stop``); ``raw`` answers a
        plain text prompt instead of formatting ``messages`` (which the self-evaluation still reads)."""
        t0 = time.perf_counter()
        prompt, stop_strings = self.prompt(messages, raw=raw)
        budget = self.engine.n_ctx - len(prompt)
        stop = StopRule(max_tokens=max(1, min(settings.sampling.max_tokens, budget)),
                        stop_strings=[*stop_strings, *(s for s in (stop or []) if s)])
        evaluator = None
        if settings.mode == "rain":
            settings, evaluator = self._evaluator(messages, prompt, settings)
        reads_here = hasattr(evaluator, "stop_reading") and getattr(evaluator, "engine", None) is self.engine
        if not reads_here and getattr(self.engine, "can_read_states", False):
            self.engine.want_layers([])  # no latent judge reads this answer's decodes (an earlier one may have asked)
        # Decode the prompt once up front so its cost is counted as "prompt", not as answer work;
        # the strategy's first request then finds it cached.
        self.engine.logprobs([prompt], phase="prompt")
        if settings.mode == "vanilla":
            from rainlocal.search.vanilla import vanilla_generate

            events = vanilla_generate(self.engine, prompt, settings.sampling, stop, should_stop=should_stop)
        else:
            from rainlocal.search.fast import fast_generate
            from rainlocal.search.rain import rain_generate

            if not getattr(self.engine, "can_embed", True) and (settings.rain.similarity or settings.rain.dynamic_add):
                # An inference server without embeddings: the search runs without the updates that need them
                # (the CLI said so once when it connected).
                settings = replace(settings, rain=replace(settings.rain, similarity=False, dynamic_add=False))
            loop = fast_generate if settings.rain.loop == "draft" else rain_generate
            events = loop(
                self.engine, prompt, evaluator, settings.rain, settings.sampling, stop, should_stop=should_stop
            )
        separate_judge = self.judge_engine is not self.engine
        judge_before = sum(self.judge_engine.counters.values()) if separate_judge else 0
        first_commit: float | None = None
        for ev in events:
            if isinstance(ev, Commit) and first_commit is None:
                first_commit = time.perf_counter()
            if isinstance(ev, Done):
                total = time.perf_counter() - t0
                ev.stats.setdefault("answer_tokens", len(ev.tokens))
                if separate_judge and "tokens_decoded" in ev.stats:
                    # A --judge model decodes on its own engine; count that work as judge work.
                    judged = sum(self.judge_engine.counters.values()) - judge_before
                    ev.stats["tokens_decoded"]["judge"] = ev.stats["tokens_decoded"].get("judge", 0) + judged
                ev.stats["usage"] = {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": len(ev.tokens),
                    "total_tokens": len(prompt) + len(ev.tokens),
                }
                ev.stats["timings"] = {
                    "total_s": round(total, 4),
                    "first_commit_s": round((first_commit or time.perf_counter()) - t0, 4),
                    "tokens_per_s": round(len(ev.tokens) / total, 3) if total > 0 else None,
                }
            yield ev
