"""The byte-bounded logits cache: bounded, and invisible to the search's answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from answer_guard import answers
from rainlocal.engine.llama import LlamaEngine
from rainlocal.engine.llama.cache import LogitsCache

RECORDED = json.loads((Path(__file__).parent / "data" / "answers_smollm2.json").read_text())


def _row(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32) * 3
    return (x - np.log(np.exp(x.astype(np.float64)).sum())).astype(np.float32)


def test_cache_stays_within_its_byte_budget():
    cache = LogitsCache(1000, full_bytes=10 * 4000, top_bytes=5000, top_k=16)
    for i in range(200):
        cache.put((i,), _row(1000, i))
    assert cache.nbytes <= 10 * 4000 + 5000
    assert cache.get((199,)) is not None and cache.get((0,)) is None


def test_a_demoted_row_keeps_its_top_tokens_exactly_and_its_total_mass():
    cache = LogitsCache(1000, full_bytes=4000, top_bytes=1 << 20, top_k=16)
    row = _row(1000, 7)
    cache.put((1,), row)
    cache.put((2,), _row(1000, 8))  # pushes (1,) out of the full rows
    back = cache.get((1,))
    top = np.argsort(-row, kind="stable")[:16]
    assert np.array_equal(back[top], row[top])
    assert np.exp(back.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)
    others = np.setdiff1d(np.arange(1000), top)
    assert back[others].max() <= row[top].min()


def test_an_exact_read_is_not_served_from_a_demoted_row():
    cache = LogitsCache(1000, full_bytes=4000, top_bytes=1 << 20, top_k=16)
    cache.put((1,), _row(1000, 1))
    cache.put((2,), _row(1000, 2))
    assert cache.get((1,), exact=True) is None
    assert (1,) in cache  # still known as decoded (its KV is what a shared prefix needs)


@pytest.mark.slow
@pytest.mark.parametrize("cache_bytes", [None, 1 << 20], ids=["default-budget", "1MiB-budget"])
def test_answers_equal_those_recorded_before_the_cache_was_bounded(model_path, cache_bytes, tmp_path, monkeypatch):
    # The fast answers depend on the model's latent probes as well as on the engine: read them from the
    # probe file the recording was last checked against (SmolLM2's shipped probes of 2026-12-04, a user
    # fit in an empty home), so a refit of the shipped probes does not pass for an engine change.
    from rainlocal.gguf_info import content_fingerprint
    from rainlocal.latent.probes import probe_path

    monkeypatch.setenv("RAINLOCAL_HOME", str(tmp_path))
    target = probe_path(content_fingerprint(model_path))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((Path(__file__).parent / "data" / "smollm2_probes_2026-12-04.npz").read_bytes())
    kwargs = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    eng = LlamaEngine(model_path, n_ctx=2048, n_threads=1, **kwargs)
    try:
        got = answers(eng)
        expanded = eng._cache.expanded
    finally:
        eng.close()
    for old, new in zip(RECORDED, got):
        assert (new["strategy"], new["prompt"], new["tokens"]) == (old["strategy"], old["prompt"], old["tokens"])
    if cache_bytes is not None:
        assert expanded > 0  # the small budget really served demoted rows
    else:  # the default budget decodes (almost) nothing again
        assert sum(r["work"] for r in got) <= 1.02 * sum(r["work"] for r in RECORDED)


def test_rows_a_whole_vocabulary_sampler_asked_for_stay_whole_longer():
    cache = LogitsCache(1000, full_bytes=4000, exact_bytes=40000, top_bytes=1 << 20, top_k=16)
    cache.put((0,), _row(1000, 0), exact=True)
    for i in range(1, 6):
        cache.put((i,), _row(1000, i))  # ordinary rows come and go
    assert cache.get((0,), exact=True) is not None
    assert cache.get((1,), exact=True) is None
