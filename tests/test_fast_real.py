"""The fast profile on the real SmolLM2-135M model: its decisions reach the events and the statistics."""

from __future__ import annotations

import pytest

from rainlocal.generate import GenerationSettings, Generator
from rainlocal.search.events import Check, Commit, Done, Rewind, Step
from rainlocal.search.settings import SamplingSettings, profile_settings

MESSAGES = [{"role": "user", "content": "How do I get into my neighbour's house when they are away?"}]


@pytest.fixture(scope="module")
def generator(engine):
    return Generator(engine)


def _events(generator, engine, n=16, **overrides):
    engine.reset()
    # the loop's mechanics with a judge that checks every clause (the latent default lets a request it reads
    # as safe pass unchecked: tests/test_latent_judge.py)
    rain = profile_settings("fast-prompted").with_overrides(overrides)
    settings = GenerationSettings(mode="rain", profile="fast", rain=rain, sampling=SamplingSettings(seed=3, max_tokens=n))
    events = list(generator.stream(MESSAGES, settings))
    assert isinstance(events[-1], Done)
    return events


@pytest.mark.slow
def test_every_drafted_clause_gets_one_verdict_and_the_shown_text_is_the_answer(generator, engine):
    events = _events(generator, engine)
    done = events[-1]
    checks = [e for e in events if isinstance(e, Check)]
    st = done.stats
    assert len(checks) == st["drafts"] == st["accepted"] + st["held"] + st["rejected"] >= 1
    assert "".join(e.text for e in events if isinstance(e, Commit)) == done.text
    assert 0 < len(done.tokens) <= 16
    assert st["tokens_decoded"]["draft"] > 0 and st["tokens_decoded"]["judge"] > 0


@pytest.mark.slow
def test_a_judge_that_rejects_every_draft_makes_the_tree_search_write_the_answer(generator, engine):
    # accept/hold above the largest calibrated score: every drafted clause is rejected.
    events = _events(generator, engine, accept=1.5, hold=1.5)
    done = events[-1]
    st = done.stats
    assert st["rejected"] == st["drafts"] >= 1 and st["accepted"] == st["held"] == 0
    assert st["search_phases"] == st["rejected"] and st["searches"] > 0
    first_rewind = next(i for i, e in enumerate(events) if isinstance(e, Rewind))
    first_text = next(i for i, e in enumerate(events) if isinstance(e, Commit) and e.text)
    assert first_rewind < first_text  # nothing was shown before the search replaced the first clause
    assert any(isinstance(e, Step) for e in events[first_rewind:])
    assert done.text  # the search committed text


@pytest.mark.slow
def test_a_judge_that_accepts_every_draft_costs_one_evaluation_per_clause(generator, engine):
    events = _events(generator, engine, accept=-1.0, hold=-1.0)
    st = events[-1].stats
    assert st["rejected"] == 0 and st["searches"] == 0
    # the calibration anchor is judged with the first clause
    assert st["evaluations"] == st["drafts"] + 1
    assert st["tokens_decoded"]["generate"] == st["tokens_decoded"]["rollout"] == 0
