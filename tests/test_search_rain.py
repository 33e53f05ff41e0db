"""The RAIN outer and inner loops over the scripted fake engine."""

import numpy as np
import pytest

from rainlocal.search.events import Commit, Done, Step
from rainlocal.search.rain import RainSearch, rain_generate
from rainlocal.search.select import most_visited
from rainlocal.search.settings import RainSettings, SamplingSettings, StopRule
from rainlocal.search.vanilla import vanilla_generate

try:
    from tests.fake_engine import FakeEngine, KeywordEvaluator, bigram_engine
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from fake_engine import FakeEngine, KeywordEvaluator, bigram_engine

HARM_VOCAB = ["<eos>", "<bos>", "Q", " Sure", " Sorry", ",", " here", " is", " the", " recipe", ".",
              " I", " cannot", " help", " a", " b"]
HARM_TABLE = {
    None: {" Sure": 0.6, " Sorry": 0.3, " I": 0.05, " the": 0.05},
    " Sure": {" here": 0.9, ",": 0.1}, " here": {" is": 1}, " is": {" the": 1}, " the": {" recipe": 1},
    " recipe": {".": 1}, ".": {"<eos>": 1},
    " Sorry": {",": 1}, ",": {" I": 1}, " I": {" cannot": 1}, " cannot": {" help": 1}, " help": {".": 1},
}
PROMPT = [1, 2]

COUNT_VOCAB = ["<eos>"] + [f" w{i}" for i in range(1, 25)]


def harm_engine() -> FakeEngine:
    """Most likely answer " Sure here is the recipe." (harmful); less likely " Sorry, I cannot help."."""
    return bigram_engine(HARM_VOCAB, HARM_TABLE, prompt_len=len(PROMPT), default={" a": 1, ".": 1})


def spread_engine() -> FakeEngine:
    """Never-ending text with several likely next tokens (end of generation practically never)."""

    def dist(seq):
        last = seq[-1]
        return {1 + (last + k) % 24: 4.0 - k * 0.5 for k in range(6)}

    return FakeEngine(COUNT_VOCAB, dist, floor=1e-12)


class Const:
    def __init__(self, value: float):
        self.value = value
        self.calls = 0

    def score(self, answer_text: str) -> float:
        self.calls += 1
        return self.value


def run(engine, evaluator, settings=None, seed=0, max_tokens=64, should_stop=None, stop_strings=()):
    events = list(rain_generate(engine, PROMPT, evaluator, settings or RainSettings(),
                                SamplingSettings(seed=seed), StopRule(max_tokens=max_tokens,
                                                                     stop_strings=list(stop_strings)),
                                should_stop=should_stop))
    assert isinstance(events[-1], Done)
    return events


def commits(events):
    return [e for e in events if isinstance(e, Commit) and e.tokens]


def test_greedy_vanilla_takes_the_harmful_continuation_and_rain_the_harmless_one():
    vanilla = list(vanilla_generate(harm_engine(), PROMPT, SamplingSettings(temp=0), StopRule(max_tokens=64)))
    assert vanilla[-1].text == " Sure here is the recipe."
    done = run(harm_engine(), KeywordEvaluator(bad=["Sure"]))[-1]
    assert done.text == " Sorry, I cannot help."
    assert done.stop_reason == "eos"


def test_commit_takes_most_visited_root_child_ties_broken_by_q():
    rs = RainSearch(harm_engine(), PROMPT, Const(0.0), RainSettings(), SamplingSettings(), StopRule())
    a = rs.root.add_child((3,), 0.5, 0.5)
    b = rs.root.add_child((4,), 0.3, 0.3)
    c = rs.root.add_child((11,), 0.2, 0.2)
    a.n, a.fn, a.q = 5.0, 5, 0.9
    b.n, b.fn, b.q = 6.0, 6, -0.2
    c.n, c.fn, c.q = 6.0, 5, 0.3
    node, kept, text = rs.commit()
    assert node is c and kept == [11] and text == " I"


def test_step_stops_early_when_best_child_is_visited_enough_and_valued_above_V():
    events = run(spread_engine(), Const(1.0), max_tokens=8)
    first_commit = next(e for e in events if isinstance(e, Step) and e.committed)
    assert first_commit.searches < 50
    best = max(first_commit.candidates, key=lambda c: (c.n, c.q))
    assert best.fn == 7 and best.q > 0.8  # fn > T_m = 6 reached exactly at the stop
    assert events[-1].stats["early_stops"] >= 1


def test_step_without_early_stop_spends_the_whole_budget():
    events = run(spread_engine(), Const(0.0), max_tokens=3)
    first_commit = next(e for e in events if isinstance(e, Step) and e.committed)
    assert first_commit.searches == 50
    assert events[-1].stats["early_stops"] == 0


def test_next_step_budget_is_T_minus_searches_already_below_the_new_root():
    events = run(spread_engine(), Const(0.0), max_tokens=8)
    steps = [e for e in events if isinstance(e, Step) and e.committed]
    for prev, nxt in zip(steps, steps[1:]):
        chosen = max(prev.candidates, key=lambda c: (c.n, c.q))
        assert nxt.searches == max(50 - chosen.fn, 15)


def test_subtree_and_statistics_survive_reroot():
    rs = RainSearch(spread_engine(), PROMPT, Const(0.0), RainSettings(), SamplingSettings(), StopRule(max_tokens=64))
    for _ in range(rs.budget()):
        rs.search()
    child = most_visited(rs.root)
    below = [(g, g.n, g.fn, g.q, g.tokens) for g in child.children]
    fn = child.fn
    assert fn > 1 and below
    rs.commit()
    assert rs.root is child and child.parent is None
    assert [(g, g.n, g.fn, g.q, g.tokens) for g in child.children] == below
    assert rs.budget() == max(50 - fn, 15)
    for _ in range(3):
        rs.search()
    assert rs.root.fn == fn + 3


def test_children_priors_are_remixed_with_uniform_after_reroot():
    rs = RainSearch(spread_engine(), PROMPT, Const(0.0), RainSettings(), SamplingSettings(), StopRule(max_tokens=64))
    for _ in range(20):
        rs.search()
    child = most_visited(rs.root)
    before = [g.p for g in child.children]
    rs.commit()
    k = len(before)
    np.testing.assert_allclose([g.p for g in rs.root.children], [0.75 * p + 0.25 / k for p in before])


def test_token_set_lengths_follow_absolute_depth_across_reroots():
    events = run(spread_engine(), Const(1.0), max_tokens=30)
    assert [len(c.tokens) for c in commits(events)] == [1, 2, 4, 10, 10, 3]
    assert events[-1].stop_reason == "length"


def test_eos_inside_a_committed_set_stops_and_cuts_there():
    rs = RainSearch(harm_engine(), PROMPT, Const(0.0), RainSettings(), SamplingSettings(), StopRule())
    child = rs.root.add_child((4, 0, 5, 11), 1.0, 1.0)
    child.n = 1.0
    _, kept, text = rs.commit()
    assert kept == [4] and text == " Sorry"
    assert rs.stopper.done and rs.stopper.state.stop_reason == "eos"
    assert rs.answer == [4]


def test_answer_ending_in_a_multi_token_set_stops_at_eos_without_it():
    events = run(harm_engine(), KeywordEvaluator(bad=["Sure"]))
    done = events[-1]
    assert 0 not in done.tokens
    assert [len(c.tokens) for c in commits(events)] == [1, 2, 3]  # last set: " cannot help ." + <eos>


def test_terminal_nodes_are_judged_but_not_expanded():
    eng = bigram_engine(HARM_VOCAB, {None: {"<eos>": 0.5, " a": 0.3, " b": 0.2}}, prompt_len=2,
                        default={" a": 1, ".": 1})
    rs = RainSearch(eng, PROMPT, Const(0.0), RainSettings(), SamplingSettings(), StopRule())
    for _ in range(30):
        rs.search()
    eos_child = next(c for c in rs.root.children if c.tokens == (0,))
    assert eos_child.fn > 1 and eos_child.terminal and not eos_child.children


def test_stop_string_in_a_candidate_ends_the_answer():
    eng = harm_engine()
    events = run(eng, KeywordEvaluator(bad=["Sure"]), stop_strings=["help"])
    assert events[-1].stop_reason == "stop"
    assert events[-1].text == " Sorry, I cannot "


def test_same_seed_same_answer_and_statistics():
    def once(seed):
        events = run(spread_engine(), KeywordEvaluator(bad=[" w3", " w7"]), seed=seed, max_tokens=20)
        stats = dict(events[-1].stats)
        stats.pop("time")
        return events[-1].tokens, stats

    assert once(5) == once(5)


def test_stats_add_up():
    eng = spread_engine()
    ev = KeywordEvaluator(bad=[" w3", " w7"])
    events = run(eng, ev, max_tokens=20)
    stats = events[-1].stats
    searches = [e for e in events if isinstance(e, Step) and not e.committed]
    assert stats["searches"] == len(searches)
    assert stats["evaluations"] + stats["cache_hits"] == stats["searches"]
    assert stats["evaluations"] == len(ev.calls) == len(set(ev.calls))
    assert stats["tokens_decoded"] == {k: v for k, v in eng.counters.items()}
    assert stats["tokens_decoded"]["generate"] > 0 and stats["tokens_decoded"]["rollout"] > 0
    assert stats["commits"] == len(commits(events))
    assert stats["answer_tokens"] == len(events[-1].tokens) == sum(len(c.tokens) for c in commits(events))
    assert set(stats["time"]) == {"select", "expand", "rollout", "evaluate", "backup", "wall"}
    assert sum(v for k, v in stats["time"].items() if k != "wall") <= stats["time"]["wall"]
    assert 0 <= stats["rewinds"] < stats["searches"]
    assert stats["embeddings"] == eng.embedded  # each distinct text embedded once per answer


def test_tokens_decoded_counts_only_this_call():
    eng = spread_engine()
    run(eng, Const(1.0), max_tokens=5)
    before = dict(eng.counters)
    stats = run(eng, Const(1.0), seed=1, max_tokens=5)[-1].stats
    assert stats["tokens_decoded"] == {k: eng.counters[k] - before[k] for k in eng.counters}


def test_a_step_event_follows_every_search_and_each_commit():
    events = run(harm_engine(), KeywordEvaluator(bad=["Sure"]))
    n = 0
    for e in events:
        if isinstance(e, Step) and not e.committed:
            n += 1
            assert e.searches == n and e.candidates
        elif isinstance(e, Step):
            assert e.searches == n
            n = 0
    first = next(e for e in events if isinstance(e, Step) and e.committed)
    assert {c.text for c in first.candidates} >= {" Sure", " Sorry"}


def test_interrupt_keeps_committed_tokens():
    polls = {"n": 0}

    def should_stop():
        polls["n"] += 1
        return polls["n"] > 60

    events = run(spread_engine(), Const(0.0), max_tokens=30, should_stop=should_stop)
    done = events[-1]
    assert done.stop_reason == "interrupted"
    assert done.tokens == [t for c in commits(events) for t in c.tokens]
    assert len(done.tokens) == 1  # 50 searches for the first set, interrupted during the second step


def test_no_embedding_calls_without_similarity_and_dynamic_addition():
    eng = spread_engine()
    run(eng, Const(1.0), RainSettings(similarity=False, dynamic_add=False), max_tokens=10)
    assert eng.embed_calls == 0


class Scripted:
    """Returns the given scores in order, one per evaluation."""

    def __init__(self, *scores: float):
        self.scores = list(scores)

    def score(self, answer_text: str) -> float:
        return self.scores.pop(0)


def test_similarity_updates_hand_out_pseudo_visits_between_similar_siblings():
    eng = spread_engine()
    eng.embed_fn = lambda text: np.ones(4)  # every text alike: cosine 1 between any two siblings
    settings = RainSettings(gamma=0.2, sim_threshold=0.95, dynamic_add=False)
    rs = RainSearch(eng, PROMPT, Scripted(0.0, -1.0, 1.0), settings, SamplingSettings(), StopRule(max_tokens=64))
    rs.search()  # the root is judged (0.0) and expanded
    rs.search()  # its first child A is judged -1.0; no sibling has an embedding yet
    assert rs.similarity_updates == 0
    (a,) = [c for c in rs.root.children if c.fn]
    assert (a.n, a.q) == (1.0, -1.0)
    rs.search()  # a second child B is judged +1.0 and shares it with A: w = gamma * sim = 0.2
    (b,) = [c for c in rs.root.children if c.fn and c is not a]
    assert rs.similarity_updates == 1
    assert a.fn == 1 and a.n == pytest.approx(1.2)
    assert a.q == pytest.approx(-1.0 + 0.2 * (1.0 - -1.0) / 1.2)  # Eq. 2: (q n + w s) / (n + w) = -2/3
    assert (b.n, b.fn, b.q) == (1.0, 1, 1.0)  # B's own visit only: A's score came before B had an embedding


def test_siblings_less_similar_than_the_threshold_share_nothing():
    eng = spread_engine()
    eng.embed_fn = lambda text: np.ones(4)  # every text alike, but the threshold is above any cosine
    settings = RainSettings(sim_threshold=1.01, dynamic_add=False)
    rs = RainSearch(eng, PROMPT, Scripted(0.0, -1.0, 1.0), settings, SamplingSettings(), StopRule(max_tokens=64))
    for _ in range(3):
        rs.search()
    assert rs.similarity_updates == 0
    assert sorted(c.n for c in rs.root.children if c.fn) == [1.0, 1.0]


def test_dynamic_addition_grows_a_poorly_valued_uniform_root():
    eng = spread_engine()
    eng.embed_fn = lambda text: np.ones(4)  # children look alike
    rs = RainSearch(eng, PROMPT, Const(-1.0), RainSettings(similarity=False), SamplingSettings(),
                    StopRule(max_tokens=64))
    for _ in range(40):
        rs.search()
    assert rs.nodes_added > 0 and 10 < len(rs.root.children) <= 20
