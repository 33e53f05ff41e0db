"""``rollout`` itself on the scripted fake engine: it finishes the phrase before the judge reads it and
stops at a delimiter, at the end of generation, at a stop string, at its 32-token cap, or at the
answer's length limit."""

from __future__ import annotations

import numpy as np

from rainlocal.search.rollout import rollout
from rainlocal.search.settings import RainSettings, StopRule

try:
    from tests.fake_engine import bigram_engine
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from fake_engine import bigram_engine

VOCAB = ["<eos>", "<bos>", "Q", " one", " two", " three", ".", "\nUser"]
PROMPT = [1, 2]


def _engine(table):
    # the fake's floor weight is tiny, so the rows below decide every sampled token
    return bigram_engine(VOCAB, table, prompt_len=len(PROMPT), floor=1e-12)


def _words(engine, tokens):
    return [engine.vocab[t] for t in tokens]


def test_rollout_stops_after_the_delimiter_it_samples():
    eng = _engine({" one": {" two": 1}, " two": {" three": 1}, " three": {".": 1}, ".": {" one": 1}})
    out = rollout(eng, PROMPT, eng.ids(" one"), RainSettings(), StopRule(max_tokens=100), np.random.default_rng(0))
    assert _words(eng, out) == [" two", " three", "."]
    assert eng.calls["rollout"] == 3


def test_rollout_samples_nothing_when_the_text_already_ends_with_a_delimiter():
    eng = _engine({".": {" one": 1}})
    out = rollout(eng, PROMPT, eng.ids(" one", "."), RainSettings(), StopRule(max_tokens=100), np.random.default_rng(0))
    assert out == [] and eng.calls["rollout"] == 0


def test_rollout_ends_at_the_end_of_generation_without_keeping_it():
    eng = _engine({" one": {" two": 1}, " two": {"<eos>": 1}})
    out = rollout(eng, PROMPT, eng.ids(" one"), RainSettings(), StopRule(max_tokens=100), np.random.default_rng(0))
    assert _words(eng, out) == [" two"]


def test_rollout_ends_at_a_stop_string():
    eng = _engine({" one": {"\nUser": 1}, "\nUser": {" two": 1}, " two": {" three": 1}, " three": {" two": 1}})
    settings = RainSettings(rollout_delimiters=".")  # so the newline is not a delimiter here
    out = rollout(eng, PROMPT, eng.ids(" one"), settings, StopRule(max_tokens=100, stop_strings=["\nUser"]),
                  np.random.default_rng(0))
    assert _words(eng, out) == ["\nUser"]


def test_rollout_stops_at_its_cap_of_32_tokens_without_a_delimiter():
    eng = _engine({" one": {" two": 1}, " two": {" one": 1}})  # never a delimiter, never an end
    assert RainSettings().rollout_max_tokens == 32
    out = rollout(eng, PROMPT, eng.ids(" one"), RainSettings(), StopRule(max_tokens=1000), np.random.default_rng(0))
    assert len(out) == 32 and eng.calls["rollout"] == 32
    short = rollout(eng, PROMPT, eng.ids(" one"), RainSettings(rollout_max_tokens=5), StopRule(max_tokens=1000),
                    np.random.default_rng(0))
    assert _words(eng, short) == [" two", " one", " two", " one", " two"]


def test_rollout_stops_at_the_answers_length_limit():
    eng = _engine({" one": {" two": 1}, " two": {" one": 1}})
    answer = eng.ids(" one", " two", " one")
    out = rollout(eng, PROMPT, answer, RainSettings(), StopRule(max_tokens=5), np.random.default_rng(0))
    assert len(answer) + len(out) == 5
