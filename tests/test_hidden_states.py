"""Hidden states out of the engine's own decodes (llama.cpp's eval callback) on the real SmolLM2 model:
the rows are the states a decode of the sequence alone gives, and what was decoded is not decoded again."""

import numpy as np
import pytest

from rainlocal.engine.llama.hidden import prefix_hashes


def test_prefix_hashes_name_every_prefix_and_only_it():
    a = prefix_hashes([5, 6, 7])
    b = prefix_hashes([5, 6, 8])
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    assert prefix_hashes([6, 5])[1] != a[1]  # order matters


@pytest.fixture()
def eng(engine):
    engine.reset()
    engine.want_layers([engine.n_layer // 2])
    yield engine
    engine.hidden.want([])
    engine.reset()


def test_states_read_from_a_batch_of_branches_match_a_decode_of_the_sequence_alone(eng):
    a = eng.tokenize("The cat sat on the mat and looked at the door.")
    b = eng.tokenize("The cat sat on the mat, then it slept.")
    eng.logprobs([a, b], phase="judge")  # two branches in one batch, sharing a prefix
    both = eng.hidden_states(a, 0)
    eng.reset()
    eng.logprobs([a], phase="judge")
    alone = eng.hidden_states(a, 0)
    assert both.shape == (len(a), 1, eng.n_embd)
    cos = (both * alone).sum(-1) / (np.linalg.norm(both, axis=-1) * np.linalg.norm(alone, axis=-1))
    assert cos.min() > 0.99  # the same states up to the float noise of another batch layout


def test_states_of_decoded_tokens_cost_no_decode(eng):
    seq = eng.tokenize("Paris is the capital of France.")
    eng.logprobs([seq], phase="judge")
    before = dict(eng.counters)
    eng.hidden_states(seq, 2)
    assert eng.counters == before


def test_a_token_that_was_sampled_but_never_fed_back_is_decoded_once_when_its_state_is_asked(eng):
    seq = eng.tokenize("One, two, three, four")
    eng.logprobs([seq[:-1]], phase="rollout")  # a rollout decodes up to its last sampled token
    before = eng.counters["judge"]
    st = eng.hidden_states(seq, len(seq) - 2)
    assert st.shape[0] == 2 and eng.counters["judge"] - before == 1
