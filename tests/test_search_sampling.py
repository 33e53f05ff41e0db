"""The numpy sampling helpers."""

import numpy as np
import pytest

from rainlocal.search.sampling import log_softmax, sample_token, softmax, top_k_dist, top_k_ids


def test_log_softmax_normalises():
    lp = log_softmax(np.array([1.0, 2.0, 3.0]))
    assert np.exp(lp).sum() == pytest.approx(1.0)
    assert lp[2] - lp[1] == pytest.approx(1.0)


def test_top_k_ids_sorted_with_ties_to_lower_id():
    x = np.array([0.1, 0.5, 0.5, 0.9, 0.2])
    assert list(top_k_ids(x, 3)) == [3, 1, 2]
    assert list(top_k_ids(x, 0)) == [3, 1, 2, 4, 0]


def test_top_k_dist_renormalises_at_temperature():
    lp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, probs = top_k_dist(lp, 2)
    assert list(ids) == [0, 1] and probs == pytest.approx([0.625, 0.375])
    _, hot = top_k_dist(lp, 2, temp=2.0)
    assert hot[0] < 0.625


def test_temp_zero_is_argmax_and_draws_nothing():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert sample_token(np.log(np.array([0.2, 0.5, 0.3])), rng, temp=0) == 1
    assert rng.bit_generator.state == state


def test_top_p_keeps_the_smallest_nucleus():
    lp = np.log(np.array([0.05, 0.6, 0.3, 0.05]))
    rng = np.random.default_rng(1)
    draws = {sample_token(lp, rng, top_p=0.5) for _ in range(50)}
    assert draws == {1}
    draws = {sample_token(lp, rng, top_p=0.85) for _ in range(200)}
    assert draws == {1, 2}


def test_full_vocabulary_sampling_follows_the_distribution():
    p = np.array([0.1, 0.6, 0.3])
    rng = np.random.default_rng(2)
    counts = np.bincount([sample_token(np.log(p), rng) for _ in range(4000)], minlength=3) / 4000
    assert counts == pytest.approx(p, abs=0.03)


def test_softmax_matches_exp_log_softmax():
    x = np.array([3.0, -1.0, 0.5])
    assert softmax(x) == pytest.approx(np.exp(log_softmax(x)))
