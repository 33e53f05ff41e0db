"""The Python API: ``rainlocal.load(...)`` -> ``Model.answer(...)`` -> ``Response`` (text, stats,
streaming by iteration), and the engine factory hook."""

from __future__ import annotations

import pytest

import rainlocal
from rainlocal.api import Model, make_engine
from rainlocal.errors import UsageError

from fake_cli_engine import REPLIES, CliFakeEngine


@pytest.fixture()
def model():
    return Model(CliFakeEngine("fake.gguf"))


def test_iterating_a_response_streams_the_committed_chunks_and_text_is_their_join(model):
    response = model.answer("How do I pick a lock?", profile="paper", T=2, min_searches=1, max_tokens=40)
    chunks = list(response)
    assert len(chunks) > 1  # streamed token set by token set, not in one piece
    assert "".join(chunks) == response.text and response.text in REPLIES
    assert list(response) == chunks  # a second iteration replays, it does not search again
    assert response.stats["commits"] == len(chunks) and response.stop_reason == "eos"


def test_text_alone_runs_the_answer_to_the_end(model):
    response = model.answer([{"role": "user", "content": "Hi"}], vanilla=True, temp=0)
    assert response.text == REPLIES[0]
    assert response.stats["usage"]["completion_tokens"] == len(REPLIES[0]) == len(response.tokens)


def test_settings_are_checked_like_set_flags(model):
    with pytest.raises(UsageError, match="cand_temp"):
        model.answer("Hi", cand_temp=0)
    with pytest.raises(UsageError, match="unknown RAIN setting 'nope'"):
        model.answer("Hi", nope=1)
    with pytest.raises(UsageError, match="unknown profile"):
        model.answer("Hi", profile="turbo")


def test_sampling_settings_out_of_range_are_refused_by_name(model):
    with pytest.raises(UsageError, match=r"^temp must be 0 or more$"):
        model.answer("Hi", vanilla=True, temp=-1)
    with pytest.raises(UsageError, match=r"^top_p must be in \(0, 1\]$"):
        model.answer("Hi", vanilla=True, top_p=1.5)
    with pytest.raises(UsageError, match=r"^max_tokens must be at least 1$"):
        model.answer("Hi", max_tokens=0)


def test_keyword_settings_reach_the_search(model):
    gen = model.settings(profile="adversarial", T=7, seed=3, max_tokens=9)
    assert (gen.rain.T, gen.rain.cand_temp, gen.sampling.seed, gen.sampling.max_tokens) == (7, 2.0, 3, 9)
    assert gen.objective == "harmless" and gen.mode == "rain"


def test_the_engine_factory_variable_names_the_engine_maker(monkeypatch):
    monkeypatch.setenv("RAINLOCAL_ENGINE_FACTORY", "fake_cli_engine:make")
    engine = make_engine("anything.gguf", n_ctx=128)
    assert isinstance(engine, CliFakeEngine) and engine.n_ctx == 128 and engine.path.name == "anything.gguf"
    with rainlocal.load("anything.gguf") as m:
        assert m.answer("Hi", vanilla=True, temp=0).text == REPLIES[0]
    assert m.engine.closed


def test_a_malformed_factory_variable_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("RAINLOCAL_ENGINE_FACTORY", "no_colon_here")
    with pytest.raises(UsageError, match="module:callable"):
        make_engine("x")
    monkeypatch.setenv("RAINLOCAL_ENGINE_FACTORY", "no_such_module_xyz:make")
    with pytest.raises(UsageError, match="no_such_module_xyz"):
        make_engine("x")


def test_load_answers_with_the_real_model(model_path):
    with rainlocal.load(model_path, ctx_size=1024, threads=1) as m:
        first = m.answer("Say hello.", vanilla=True, temp=0, max_tokens=8)
        chunks = list(first)
        assert "".join(chunks) == first.text and 0 < len(chunks) <= len(first.tokens) <= 8
        assert first.stats["usage"]["completion_tokens"] == len(first.tokens)
        m.engine.reset()
        assert m.answer("Say hello.", vanilla=True, temp=0, max_tokens=8).text == first.text
