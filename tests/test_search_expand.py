"""Expansion: token-set lengths, priors (top-k, joint, clamp, renormalise, root mixing), dynamic addition."""

import math

import numpy as np
import pytest

from rainlocal.search.expand import (
    clamp_greedy,
    dynamic_add,
    expand,
    mix_root_priors,
    sample_candidates,
    set_length,
    should_add,
)
from rainlocal.search.sampling import softmax, top_k_dist
from rainlocal.search.settings import RainSettings
from rainlocal.search.tree import Node

try:
    from tests.fake_engine import FakeEngine
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from fake_engine import FakeEngine

VOCAB = ["<eos>"] + [f" w{i}" for i in range(1, 25)]
PROMPT = [1, 2]


def ranked_engine(**kw) -> FakeEngine:
    """Token i has weight 25 - i after anything (token 0, end of generation, weight 0.5)."""
    w = np.array([0.5] + [25.0 - i for i in range(1, 25)])
    return FakeEngine(VOCAB, lambda seq: w, **kw)


def spread_engine() -> FakeEngine:
    """Next token depends on the last one and has several likely options."""

    def dist(seq):
        last = seq[-1]
        return {1 + (last + k) % 24: 4.0 - k * 0.5 for k in range(6)}

    return FakeEngine(VOCAB, dist, floor=1e-3)


def non_root(depth: int) -> Node:
    """A node that is not the root (so no uniform mixing) at the given depth."""
    return Node(depth=depth, parent=Node(depth=depth - 1))


def test_set_length_follows_absolute_depth():
    s = RainSettings()
    assert [set_length(s, d) for d in range(6)] == [1, 2, 4, 10, 10, 10]


def test_first_token_set_is_top_10_single_tokens_with_renormalised_softmax_priors():
    eng = ranked_engine()
    node = non_root(-1)
    added = expand(node, eng, PROMPT, RainSettings(), np.random.default_rng(0), remaining=100)
    assert added == 10
    assert [c.tokens for c in node.children] == [(i,) for i in range(1, 11)]
    full = softmax(eng.next_logprobs(tuple(PROMPT)))
    expected = full[1:11] / full[1:11].sum()
    np.testing.assert_allclose([c.p for c in node.children], expected, rtol=1e-5)
    assert eng.calls["generate"] == 1


def test_root_expansion_mixes_priors_with_25_percent_uniform():
    eng = ranked_engine()
    root = Node(depth=-1)
    expand(root, eng, PROMPT, RainSettings(), np.random.default_rng(0), remaining=100)
    full = softmax(eng.next_logprobs(tuple(PROMPT)))
    pure = full[1:11] / full[1:11].sum()
    np.testing.assert_allclose([c.p for c in root.children], 0.75 * pure + 0.025, rtol=1e-5)
    assert sum(c.p for c in root.children) == pytest.approx(1.0)


def test_reroot_remixes_the_new_roots_children():
    root = Node()
    for p in (0.7, 0.2, 0.1):
        root.add_child((len(root.children),), p, p)
    mix_root_priors(root, 0.25)
    np.testing.assert_allclose([c.p for c in root.children], [0.75 * p + 0.25 / 3 for p in (0.7, 0.2, 0.1)])


def test_greedy_prior_is_clamped_between_max_plus_min_and_sum_of_samples():
    ps = [0.1, 0.05, 0.2]
    assert clamp_greedy(0.9, ps) == pytest.approx(0.35)  # capped at the sum
    assert clamp_greedy(0.01, ps) == pytest.approx(0.25)  # raised to max + min
    assert clamp_greedy(0.3, ps) == pytest.approx(0.3)
    assert clamp_greedy(0.3, []) == 0.3


def test_deeper_sets_are_greedy_plus_distinct_samples_with_renormalised_joint_priors():
    eng = spread_engine()
    node = non_root(0)  # children at depth 1: two tokens each
    expand(node, eng, PROMPT, RainSettings(), np.random.default_rng(3), remaining=100)
    toks = [c.tokens for c in node.children]
    assert 2 <= len(toks) <= 10 and len(set(toks)) == len(toks)
    assert all(len(t) == 2 for t in toks)
    # the first child is the greedy continuation (top-15 distribution, argmax each step)
    seq, greedy, lp_greedy = list(PROMPT), [], 0.0
    for _ in range(2):
        ids, probs = top_k_dist(eng.next_logprobs(tuple(seq)), 15)
        greedy.append(int(ids[0]))
        lp_greedy += math.log(probs[0])
        seq.append(int(ids[0]))
    assert toks[0] == tuple(greedy)
    raws = [c.raw for c in node.children]
    # the greedy prior, clamped by hand to [max + min, sum] of the sampled sets' priors
    samples = raws[1:]
    low, high = max(samples) + min(samples), sum(samples)
    p_greedy = math.exp(lp_greedy)
    expected = low if p_greedy < low else high if p_greedy > high else p_greedy
    assert raws[0] == pytest.approx(expected)
    np.testing.assert_allclose([c.p for c in node.children], np.array(raws) / sum(raws))
    # one batched model call per token position
    assert eng.calls["generate"] == 2


def test_candidate_branch_stops_at_end_of_generation():
    def dist(seq):
        return {0: 5.0, 3: 1.0}  # end of generation most likely

    eng = FakeEngine(VOCAB, dist)
    cands = sample_candidates(eng, PROMPT, 4, n_children=10, tries=9, top_k=15, temp=1.0,
                              rng=np.random.default_rng(0))
    assert cands[0][0] == (0,)
    for tokens, _ in cands:
        assert 0 not in tokens[:-1]


def test_identical_samples_leave_a_single_greedy_child():
    eng = FakeEngine(VOCAB, lambda seq: {5: 1.0}, floor=1e-12)
    node = non_root(1)
    expand(node, eng, PROMPT, RainSettings(), np.random.default_rng(0), remaining=100)
    assert [c.tokens for c in node.children] == [(5, 5, 5, 5)]
    assert node.children[0].p == pytest.approx(1.0)


def test_set_is_cut_to_the_tokens_left_in_the_answer():
    eng = spread_engine()
    node = non_root(3)
    expand(node, eng, PROMPT, RainSettings(), np.random.default_rng(0), remaining=3)
    assert all(len(c.tokens) == 3 for c in node.children)


def _visited_alike(node: Node, q: float = -0.5, e=None) -> None:
    for c in node.children:
        c.n, c.fn, c.q = 1.0, 1, q
        c.e = np.array([1.0, 0.0, 0.0]) if e is None else e(c)


def _top_level(eng) -> Node:
    node = non_root(-1)
    expand(node, eng, PROMPT, RainSettings(), np.random.default_rng(0), remaining=100)
    return node


def test_dynamic_addition_adds_next_most_likely_token_when_conditions_hold():
    eng = ranked_engine()
    node = _top_level(eng)
    _visited_alike(node)
    s = RainSettings()
    assert should_add(node, s)
    calls = eng.calls["generate"]
    assert dynamic_add(node, eng, PROMPT, s, np.random.default_rng(0), remaining=100) == 1
    assert node.children[-1].tokens == (11,)
    full = softmax(eng.next_logprobs(tuple(PROMPT)))
    assert node.children[-1].p == pytest.approx(full[11] / full[1:12].sum(), rel=1e-5)
    assert eng.calls["generate"] == calls  # single-token level reuses the stored distribution


def test_no_dynamic_addition_while_a_child_is_unvisited():
    node = _top_level(ranked_engine())
    _visited_alike(node)
    node.children[3].fn, node.children[3].e = 0, None
    assert not should_add(node, RainSettings())


def test_no_dynamic_addition_when_children_embeddings_differ():
    node = _top_level(ranked_engine())
    _visited_alike(node, e=lambda c: np.eye(10)[c.tokens[0] - 1])
    assert not should_add(node, RainSettings())


def test_no_dynamic_addition_when_best_child_value_is_not_negative():
    node = _top_level(ranked_engine())
    _visited_alike(node)
    node.children[5].q = 0.0
    assert not should_add(node, RainSettings())


def test_no_dynamic_addition_at_twenty_children():
    node = _top_level(ranked_engine())
    for t in range(11, 21):
        node.add_child((t,), 0.01, 0.01)
    _visited_alike(node)
    assert len(node.children) == 20
    assert not should_add(node, RainSettings())


def test_no_dynamic_addition_when_disabled():
    node = _top_level(ranked_engine())
    _visited_alike(node)
    assert not should_add(node, RainSettings(dynamic_add=False))


def test_dynamic_addition_deeper_adds_fresh_greedy_and_sample():
    eng = spread_engine()
    node = non_root(0)
    node.add_child((24, 24), 1.0, 0.01)  # not what the model would produce
    _visited_alike(node)
    s = RainSettings()
    assert should_add(node, s)
    added = dynamic_add(node, eng, PROMPT, s, np.random.default_rng(0), remaining=100)
    assert added >= 1
    new = node.children[1:]
    total_raw = sum(c.raw for c in node.children)
    for c in new:
        assert len(c.tokens) == 2
        assert c.p == pytest.approx(c.raw / total_raw)
