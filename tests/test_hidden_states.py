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


def test_states_read_without_logits_match_those_of_a_full_decode(eng):
    seq = eng.tokenize("Tell me how the water cycle works, in two sentences.")
    eng.logprobs([seq], phase="judge")
    full = eng.hidden_states(seq, 0)
    eng.reset()
    eng.read_states([seq])
    shallow = eng.hidden_states(seq, 0)
    assert np.array_equal(full, shallow)  # the same graph up to the layer: the same numbers


def test_replies_read_together_decode_their_shared_prompt_once(eng):
    prompt = eng.tokenize("Question: which planet is the largest in the solar system? Answer:")
    replies = [eng.tokenize(" Jupiter is."), eng.tokenize(" It is Jupiter, by far."), eng.tokenize(" Saturn.")]
    before = eng.counters["judge"]
    eng.read_states([prompt + r for r in replies])
    assert eng.counters["judge"] - before == len(prompt) + sum(len(r) for r in replies)
    assert all(eng.hidden.rows(prefix_hashes(prompt + r))[-1] is not None for r in replies)


def test_a_read_leaves_no_half_decoded_branch_behind(eng):
    """Cells computed only up to the read layer would poison a later full decode that reused them."""
    seq = eng.tokenize("The quick brown fox jumps over the lazy dog because")
    head = seq[:5]
    eng.logprobs([head], phase="judge")  # a full branch the read extends
    eng.read_states([seq])
    assert all(len(s.tokens) <= len(head) for s in eng.slots.slots)
    after = eng.logprobs([seq], phase="judge")[0]
    eng.reset()
    eng.hidden.want([])
    fresh = eng.logprobs([seq], phase="judge")[0]
    assert np.abs(after - fresh).max() < 0.3  # a stale cell would move it far more (the decode split differs)
    assert int(np.argmax(after)) == int(np.argmax(fresh))


def test_a_ctrl_c_during_a_decode_is_raised_after_it_and_leaves_the_engine_usable(eng, capfd):
    """While llama_decode runs, Python signal handlers run inside the eval callback, where an exception
    would be printed by ctypes and lost (the eval then ran on, or failed with missing states)."""
    import signal

    seq = eng.tokenize("one two three four five six seven eight nine ten " * 60)[:480]

    def interrupt(signum, frame):  # noqa: ANN001 - as Python's own SIGINT handler does
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # the decode of 480 tokens takes about a second here
        with pytest.raises(KeyboardInterrupt):
            eng.logprobs([seq], phase="judge")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert "Exception ignored" not in capfd.readouterr().err
    assert not any(s.tokens for s in eng.slots.slots)
    after = eng.logprobs([seq[:24]], phase="judge")[0]  # the cells of the interrupted decode were dropped
    eng.reset()
    fresh = eng.logprobs([seq[:24]], phase="judge")[0]
    assert np.abs(after - fresh).max() < 1e-4
