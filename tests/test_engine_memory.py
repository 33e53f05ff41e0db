"""The engine's memory stays bounded on the real model: logits rows and embedding outputs.

Peaks are measured with the kernel's resettable high-water mark (Linux), around the work only."""

from __future__ import annotations

import sys

import pytest

from rainlocal.evals.memory import peak_rss_mb, reset_peak

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resettable peak RSS is Linux-only")


@pytest.mark.slow
def test_many_distinct_requests_keep_the_logits_cache_within_its_budget(engine):
    engine.reset()
    base = engine.prompt_tokens("List some fruits:")
    engine.logprobs([base])
    assert reset_peak()
    start = peak_rss_mb()
    # 64 branches x 10 tokens: 640 distinct rows, 123 MB of full SmolLM2 rows if all were kept
    for depth in range(10):
        engine.logprobs([base + [100 + b] * (depth + 1) for b in range(64)])
    grown = peak_rss_mb() - start
    budget_mb = engine._cache.budget / 2**20
    assert engine._cache.nbytes <= engine._cache.budget
    assert grown < budget_mb + 40, grown  # the budget plus one decode group's rows in flight
    engine.reset()


@pytest.mark.slow
def test_embedding_a_long_text_does_not_hold_its_logits(engine):
    engine.embed(["warm up the embedding context"])
    tokens = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 50)[:500]
    assert reset_peak()
    start = peak_rss_mb()
    engine.embed_suffixes(tokens, [0, 100, 400])
    # one call for all 500 tokens held 500 x 49152 float32 logits (94 MiB)
    assert peak_rss_mb() - start < 30


def test_a_large_vocabulary_embeds_in_small_steps(model_path, monkeypatch):
    """A 262k vocabulary (gemma-3) gets 16-token calls; here SmolLM2 is made to take 8-token ones."""
    from rainlocal.engine.llama import LlamaEngine
    from rainlocal.engine.llama.embeddings import Embedder

    monkeypatch.setattr(Embedder, "OUTPUT_BYTES", 8 * 4 * 49152)
    eng = LlamaEngine(model_path, n_ctx=512, n_threads=1)
    try:
        assert eng._embedder.step == 8
        texts = [f"Sentence number {i} is about something else entirely." for i in range(12)]
        small = eng.embed(texts)
        tokens = eng.tokenize(" ".join(texts))
        rows = eng.embed_suffixes(tokens, [0, 30])
    finally:
        eng.close()
    assert small.shape == (12, rows.shape[1]) and rows.shape[0] == 2
    sims = small @ small.T
    assert (sims.diagonal() > 0.999).all() and sims[0, 1] < 0.999  # unit rows, distinct texts differ
