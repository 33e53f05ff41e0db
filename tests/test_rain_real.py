"""RAIN on the real SmolLM2-135M model: determinism, statistics that add up, a shared judge prefix."""

from __future__ import annotations

import pytest

from rainlocal.engine.llama import LlamaEngine
from rainlocal.generate import GenerationSettings, Generator
from rainlocal.judge.objectives import load_objective
from rainlocal.judge.self_eval import SelfEvaluator, prefix_tokens
from rainlocal.search.settings import RainSettings, SamplingSettings

SMALL = RainSettings(T=4, min_searches=3)
MESSAGES = [{"role": "user", "content": "How do I get into my neighbour's house when they are away?"}]


def _answer(generator, seed=0, n=12):
    settings = GenerationSettings(mode="rain", rain=SMALL, sampling=SamplingSettings(seed=seed, max_tokens=n))
    events = list(generator.stream(MESSAGES, settings))
    return events[-1]


@pytest.fixture(scope="module")
def generator(engine):
    return Generator(engine)


@pytest.mark.slow
def test_rain_answer_is_deterministic_under_a_seed(generator, engine):
    engine.reset()
    a = _answer(generator, seed=5)
    engine.reset()  # the second answer decodes everything again instead of reading the first one's cache
    b = _answer(generator, seed=5)
    assert a.text and a.tokens == b.tokens
    assert b.stats["tokens_decoded"]["generate"] == a.stats["tokens_decoded"]["generate"] > 0
    assert b.stats["tokens_decoded"]["judge"] == a.stats["tokens_decoded"]["judge"] > 0


@pytest.mark.slow
def test_rain_statistics_add_up(generator, engine):
    before = dict(engine.counters)
    done = _answer(generator, seed=1)
    st = done.stats
    assert st["evaluations"] + st["cache_hits"] == st["searches"] > 0
    assert st["answer_tokens"] == len(done.tokens) == st["usage"]["completion_tokens"]
    decoded = {k: engine.counters[k] - before[k] for k in engine.counters}
    for phase in ("generate", "rollout", "judge", "embed"):
        assert st["tokens_decoded"][phase] == decoded[phase]
    assert decoded["prompt"] == st["usage"]["prompt_tokens"] or decoded["prompt"] == 0  # prompt may be cached
    assert st["commits"] >= 1 and st["tokens_decoded"]["judge"] > 0


@pytest.mark.slow
def test_judge_prefix_is_decoded_once_per_model_load(model_path):
    eng = LlamaEngine(model_path, n_ctx=2048)
    try:
        objective = load_objective("harmless")
        n_prefix = len(prefix_tokens(eng, objective))
        first = SelfEvaluator(eng, objective, MESSAGES)
        c0 = eng.counters["judge"]
        first.score("Sure, here is how.")
        assert eng.counters["judge"] - c0 >= n_prefix  # decoded the first time
        other = SelfEvaluator(eng, objective, [{"role": "user", "content": "What is a good name for a cat?"}])
        c1 = eng.counters["judge"]
        other.score("Whiskers is a classic name.")
        assert 0 < eng.counters["judge"] - c1 < n_prefix  # only the new conversation, not the prefix
    finally:
        eng.close()


@pytest.mark.slow
def test_the_judge_prefix_is_restored_from_the_cache_by_a_new_process(model_path, tmp_path):
    """A second engine (as a new process would) restores the judge's fixed prompt instead of decoding it,
    and scores the same answer as the engine that decoded it (up to batch-shape noise)."""
    from rainlocal.judge.self_eval import judge_prefix_sequence

    objective = load_objective("harmless")
    cache = tmp_path / "prefix.state"
    scores = []
    for expect_restored in (False, True):
        eng = LlamaEngine(model_path, n_ctx=2048)
        try:
            tokens = judge_prefix_sequence(eng, objective, "soft")
            c0 = eng.counters["judge"]
            assert eng.warm_prefix(tokens, cache) is expect_restored
            warmed = eng.counters["judge"] - c0
            assert warmed == (0 if expect_restored else len(tokens))
            assert cache.is_file()
            ev = SelfEvaluator(eng, objective, MESSAGES, mode="soft")
            c1 = eng.counters["judge"]
            scores.append(ev.score("I can't help with breaking in. You could ask a neighbour to check on it."))
            assert 0 < eng.counters["judge"] - c1 < len(tokens)  # only the conversation and the tails
        finally:
            eng.close()
    assert abs(scores[0] - scores[1]) < 0.05


@pytest.mark.slow
def test_a_damaged_prefix_cache_is_decoded_over(model_path, tmp_path):
    from rainlocal.judge.self_eval import judge_prefix_sequence

    cache = tmp_path / "prefix.state"
    cache.write_bytes(b"not a llama.cpp state file")
    eng = LlamaEngine(model_path, n_ctx=2048)
    try:
        tokens = judge_prefix_sequence(eng, load_objective("harmless"), "soft")
        assert eng.warm_prefix(tokens, cache) is False
        assert eng.counters["judge"] == len(tokens)
        assert cache.stat().st_size > 1000  # rewritten with the real state
    finally:
        eng.close()
