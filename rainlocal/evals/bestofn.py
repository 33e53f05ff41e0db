"""Best-of-N by self-evaluation: the paper's "sample-evaluation" baseline.

Sample N vanilla answers (seeds ``seed+1, seed+2, ...``, the same sampling settings and stopping
rule as the vanilla answer; the vanilla answer's own seed is skipped so that no sample is a free copy
of an answer the engine has just cached), score each finished answer once with the same self-evaluation RAIN uses
(``Generator.text_evaluator``: same objective, same judge model, same score, latent included),
and keep the highest-scoring one (ties: the earlier sample).

N is either fixed or chosen to match RAIN's measured compute: answers are drawn until the engine work
spent on them (tokens decoded for sampling plus judging, the same counter RAIN's cost is measured by)
reaches the RAIN answer's work on the same prompt, capped at ``max_n``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

from rainlocal.generate import GenerationSettings, Generator
from rainlocal.search.events import AnswerStream, Done

#: Phases that count as answer work (the prompt is decoded once per prompt by every strategy).
WORK_EXCLUDE = ("prompt",)


def work_of(tokens_decoded: dict[str, int]) -> int:
    """Engine work of an answer: tokens decoded in every phase except the shared prompt."""
    return int(sum(v for k, v in (tokens_decoded or {}).items() if k not in WORK_EXCLUDE))


def engines_of(generator: Generator) -> list[Any]:
    """The distinct engines an answer can use (the answering model and a separate --judge model)."""
    return [generator.engine] + ([generator.judge_engine] if generator.judge_engine is not generator.engine else [])


def _counters(engines: list[Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for e in engines:
        for k, v in e.counters.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def run_answer(generator: Generator, messages: list[dict[str, Any]], settings: GenerationSettings,
               should_stop: Callable[[], bool] | None = None) -> Done:
    """Consume a strategy's events and return its ``Done``; ``stats["tokens_decoded"]`` is replaced by
    the tokens decoded on every engine involved (a separate self-evaluation model included), by phase."""
    engines = engines_of(generator)
    start = _counters(engines)
    done = AnswerStream(generator.stream(messages, settings, should_stop=should_stop)).finish()
    now = _counters(engines)
    done.stats["tokens_decoded"] = {k: now.get(k, 0) - start.get(k, 0) for k in sorted(now)}
    return done


def best_of_n(
    generator: Generator,
    messages: list[dict[str, Any]],
    settings: GenerationSettings,
    *,
    n: int | None = None,
    match_work: int | None = None,
    max_n: int = 32,
    should_stop: Callable[[], bool] | None = None,
) -> Done:
    """The best of N sampled answers by self-evaluation score, as a ``Done`` whose ``stats`` hold
    ``n``, every sample's ``scores``, ``seeds`` and the total ``tokens_decoded`` by phase (sampling
    and judging of all N). Give ``n`` (fixed) or ``match_work`` (draw until this much work is spent)."""
    if n is None and match_work is None:
        raise ValueError("best_of_n needs n or match_work")
    cap = max(1, int(n if n is not None else max_n))
    engines = engines_of(generator)
    t0 = time.perf_counter()
    start = _counters(engines)
    evaluator = generator.text_evaluator(messages, settings)
    vanilla = replace(settings, mode="vanilla")
    samples: list[Done] = []
    scores: list[float] = []
    seeds: list[int] = []
    interrupted = False
    for i in range(cap):
        seed = settings.sampling.seed + 1 + i
        s = replace(vanilla, sampling=replace(vanilla.sampling, seed=seed))
        done = run_answer(generator, messages, s, should_stop)
        if done.stop_reason == "interrupted":
            interrupted = True
            break
        samples.append(done)
        seeds.append(seed)
        scores.append(float(evaluator.score(done.text)))
        if match_work is not None and n is None:
            now = _counters(engines)
            spent = work_of({k: now.get(k, 0) - start.get(k, 0) for k in now})
            if spent >= match_work:
                break
    now = _counters(engines)
    decoded = {k: now.get(k, 0) - start.get(k, 0) for k in sorted(now)}
    wall = time.perf_counter() - t0
    if not samples:
        return Done(tokens=[], text="", stop_reason="interrupted", stats={"tokens_decoded": decoded})
    best = max(range(len(samples)), key=lambda i: (scores[i], -i))
    chosen = samples[best]
    stats = {
        "n": len(samples),
        "chosen": best,
        "scores": [round(x, 6) for x in scores],
        "seeds": seeds,
        "answer_tokens": len(chosen.tokens),
        "tokens_decoded": decoded,
        "match_work": match_work,
        "usage": chosen.stats.get("usage", {}),
        "timings": {"total_s": round(wall, 4)},
        "evaluations": evaluator.calls,
        "cache_hits": evaluator.cache_hits,
    }
    return Done(tokens=list(chosen.tokens), text=chosen.text,
                stop_reason="interrupted" if interrupted else chosen.stop_reason, stats=stats)


def fresh_start(generator: Generator, settings: GenerationSettings) -> None:
    """Clear every engine's branches and logits cache, then decode the judge prefix (untimed).

    Answers then do not depend on what ran before them: a reused cached prefix was computed in
    other batches, and those tiny numeric differences change sampled tokens. So an interrupted and
    resumed eval gives the answers an uninterrupted one would, and no strategy profits from
    another's cache."""
    for e in engines_of(generator):
        reset = getattr(e, "reset", None)
        if reset is not None:
            reset()
    generator.text_evaluator([{"role": "user", "content": "Hello."}], settings).score("Hi")
