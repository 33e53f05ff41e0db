"""Vanilla decoding: greedy, seeded sampling, the shared stopping rule, stats."""

from rainlocal.search.events import Commit, Done
from rainlocal.search.settings import SamplingSettings, StopRule
from rainlocal.search.vanilla import vanilla_generate

try:
    from tests.fake_engine import FakeEngine, bigram_engine
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from fake_engine import FakeEngine, bigram_engine

VOCAB = ["<eos>", "<bos>", " a", " b", " c", "."]
TABLE = {None: {" a": 0.5, " b": 0.3, " c": 0.2}, " a": {" b": 0.6, ".": 0.4}, " b": {" c": 0.7, " a": 0.3},
         " c": {".": 0.8, " a": 0.2}, ".": {"<eos>": 1.0}}
PROMPT = [1]


def engine() -> FakeEngine:
    return bigram_engine(VOCAB, TABLE, prompt_len=1)


def run(sampling, stop=None, **kw):
    return list(vanilla_generate(engine(), PROMPT, sampling, stop or StopRule(max_tokens=50), **kw))


def test_temp_zero_is_greedy():
    done = run(SamplingSettings(temp=0))[-1]
    assert done.text == " a b c."
    assert done.stop_reason == "eos"


def test_top_k_one_equals_greedy():
    assert run(SamplingSettings(temp=1.5, top_k=1, seed=9))[-1].text == " a b c."


def test_same_seed_same_answer():
    a = run(SamplingSettings(temp=1.0, top_k=0, top_p=1.0, seed=3))[-1].tokens
    b = run(SamplingSettings(temp=1.0, top_k=0, top_p=1.0, seed=3))[-1].tokens
    assert a == b


def test_seeds_vary_the_answer():
    answers = {tuple(run(SamplingSettings(temp=1.0, top_k=0, top_p=1.0, seed=s))[-1].tokens) for s in range(20)}
    assert len(answers) > 1


def test_one_commit_per_token_and_length_limit():
    eng = bigram_engine(VOCAB, {}, prompt_len=1, default={" a": 1.0})
    events = list(vanilla_generate(eng, PROMPT, SamplingSettings(temp=0), StopRule(max_tokens=5)))
    assert [e.tokens for e in events if isinstance(e, Commit)] == [[2]] * 5
    assert events[-1].stop_reason == "length" and len(events[-1].tokens) == 5


def test_stop_string_ends_the_answer():
    done = run(SamplingSettings(temp=0), StopRule(max_tokens=50, stop_strings=[" c"]))[-1]
    assert done.stop_reason == "stop" and done.text == " a b"


def test_stats_count_decoded_tokens_of_this_call():
    eng = engine()
    done = list(vanilla_generate(eng, PROMPT, SamplingSettings(temp=0), StopRule(max_tokens=50)))[-1]
    assert done.stats["answer_tokens"] == 4
    assert done.stats["tokens_decoded"] == eng.counters
    assert done.stats["tokens_decoded"]["generate"] == 1 + 4  # prompt + one new token per step
    assert done.stats["time"]["wall"] >= 0


def test_interrupt_keeps_tokens_so_far():
    polls = iter([False, False, True])
    done = run(SamplingSettings(temp=0), should_stop=lambda: next(polls))[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == "interrupted" and done.text == " a b"
