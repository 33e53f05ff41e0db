"""The llama.cpp engine's branch/rewind primitives, on the real SmolLM2-135M model."""

from __future__ import annotations

import numpy as np
import pytest

from rainlocal.engine.llama import LlamaEngine
from rainlocal.errors import ContextOverflowError, ModelError

TOL = 0.03  # probabilities differ by quantisation noise across batch shapes (llamacpp-notes.md)


@pytest.fixture(scope="module")
def fresh(model_path):
    """A second engine on the same file: every request decoded from scratch after a reset."""
    eng = LlamaEngine(model_path, n_ctx=1024)
    yield eng
    eng.close()


def _fresh_probs(fresh, seq):
    fresh.reset()
    return np.exp(fresh.logprobs([seq])[0])


def _prompt(engine, text="Tell me about the moon."):
    return engine.prompt_tokens(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def test_branches_after_rewind_match_a_fresh_decode(engine, fresh):
    prompt = _prompt(engine)
    first = engine.logprobs([prompt])[0]
    top = [int(t) for t in np.argsort(-first)[:4]]
    # Grow four branches three tokens deep in batches, then rewind to the prompt and take a new path.
    seqs = [prompt + [t] for t in top]
    for _ in range(3):
        lps = engine.logprobs(seqs)
        seqs = [s + [int(np.argmax(lp))] for s, lp in zip(seqs, lps)]
    rewound = prompt + [top[1], top[0]]
    for seq in [*seqs, rewound]:
        got = np.exp(engine.logprobs([seq])[0])
        want = _fresh_probs(fresh, seq)
        assert np.abs(got - want).max() < TOL
        assert int(np.argmax(got)) == int(np.argmax(want))


def test_branches_share_their_prefix_instead_of_redecoding_it(engine):
    prompt = _prompt(engine, "Name three colours.")
    engine.logprobs([prompt])
    before = engine.counters["generate"]
    engine.logprobs([prompt + [t] for t in range(100, 110)])
    assert engine.counters["generate"] - before == 10  # one new token per branch, prompt shared


def test_repeated_request_is_served_from_cache(engine):
    seq = _prompt(engine, "What is two plus two?")
    a = engine.logprobs([seq])[0]
    before = dict(engine.counters)
    b = engine.logprobs([seq])[0]
    assert engine.counters == before
    assert np.array_equal(a, b)


def test_phase_counters_record_who_decoded(engine):
    seq = _prompt(engine, "A question for the judge.")
    before = engine.counters["judge"]
    engine.logprobs([seq], phase="judge")
    assert engine.counters["judge"] - before > 0


def test_logprobs_are_normalised(engine):
    lp = engine.logprobs([_prompt(engine)])[0]
    assert lp.shape == (engine.n_vocab,)
    assert abs(float(np.exp(lp).sum()) - 1.0) < 1e-3


def test_sequence_longer_than_context_is_refused(engine):
    with pytest.raises(ContextOverflowError, match="2048"):
        engine.logprobs([[1] * (engine.n_ctx + 1)])


def test_many_branches_beyond_slot_count_still_decode(engine):
    prompt = _prompt(engine, "Count to ten.")
    seqs = [prompt + [200 + i, 300 + i] for i in range(engine.n_seq + 8)]
    lps = engine.logprobs(seqs)
    assert len(lps) == len(seqs) and all(lp.shape == (engine.n_vocab,) for lp in lps)


def test_embeddings_place_paraphrases_closer_than_unrelated_text(engine):
    e = engine.embed([
        "I will not help you make a weapon.",
        "I refuse to help you build a weapon.",
        "Bananas are a good source of potassium.",
    ])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_prompt_tokens_add_no_bos_for_a_model_that_wants_none(engine):
    # SmolLM2's GGUF says tokenizer.ggml.add_bos_token = false
    assert engine.metadata("tokenizer.ggml.add_bos_token") == "false" and engine.bos_token is None
    assert engine.prompt_tokens("Hello") == engine.tokenize("Hello")


def test_prompt_tokens_add_the_bos_once(engine, monkeypatch):
    (marker,) = engine.tokenize("<|im_start|>", special=True)  # a control token stands in for a BOS
    monkeypatch.setattr(engine, "bos_token", marker)
    hello = engine.tokenize("Hello")
    assert engine.prompt_tokens("Hello") == [marker, *hello]  # added
    assert engine.prompt_tokens("<|im_start|>Hello") == [marker, *hello]  # already there: not doubled


def test_non_gguf_file_is_refused_before_llama_cpp_sees_it(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("just some text, not a model\n")
    with pytest.raises(ModelError, match="not a GGUF"):
        LlamaEngine(bad)


def test_requests_sharing_an_uncached_prefix_decode_it_once(engine):
    base = _prompt(engine, "A long shared context for two requests that differ only at the very end.")
    a, b = base + [500, 501], base + [600, 601]
    before = engine.counters["judge"]
    engine.logprobs([a, b], phase="judge")
    assert engine.counters["judge"] - before <= len(base) + 4


def test_suffix_embeddings_come_from_one_pass(engine):
    tokens = engine.tokenize(" I will not help with that. Please ask something else, like a recipe.")
    before = engine.counters["embed"]
    rows = engine.embed_suffixes(tokens, [0, 4, len(tokens) - 3])
    assert engine.counters["embed"] - before == len(tokens)  # one decode for all three suffixes
    assert rows.shape[0] == 3 and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4)
    whole = engine.embed([engine.detokenize(tokens)])[0]
    assert float(rows[0] @ whole) > 0.999  # the whole-text suffix is the text's own embedding


def test_a_path_sharing_a_prefix_with_the_last_decodes_only_its_new_tokens(engine):
    base = engine.tokenize(" I will not help with that. Please ask")
    branch = base + engine.tokenize(" about something else, like a recipe.")
    other = base[:5] + engine.tokenize(" cannot say more.")
    engine.reset()
    engine.embed_suffixes(base, [0])
    before = engine.counters["embed"]
    kept = engine.embed_suffixes(branch, [0, 3, len(base)])
    kept_other = engine.embed_suffixes(other, [0, 2])
    assert engine.counters["embed"] - before == (len(branch) - len(base)) + (len(other) - 5)
    before = engine.counters["embed"]
    engine.reset()  # a reset engine decodes every path from scratch
    fresh = engine.embed_suffixes(branch, [0, 3, len(base)])
    engine.reset()
    fresh_other = engine.embed_suffixes(other, [0, 2])
    assert engine.counters["embed"] - before == len(branch) + len(other)
    # the same states up to float noise of another batch split
    assert np.allclose(kept, fresh, atol=2e-3) and np.allclose(kept_other, fresh_other, atol=2e-3)
