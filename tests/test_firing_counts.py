"""``bench`` and ``eval`` report how often similarity updates and dynamic node addition fired."""

from __future__ import annotations

from rainlocal.evals.bench import summarize_strategy
from rainlocal.evals.summary import cost_of


def _run(sim, added):
    return {"answer_tokens": 4, "wall_s": 1.0, "stop_reason": "length", "tokens_decoded": {"generate": 8},
            "similarity_updates": sim, "nodes_added": added}


def test_bench_reports_the_mean_firing_counts_per_answer():
    s = summarize_strategy([_run(3, 0), _run(5, 2)])
    assert s["similarity_updates_per_answer"] == 4.0 and s["nodes_added_per_answer"] == 1.0


def test_bench_reports_no_firing_counts_for_vanilla():
    run = _run(0, 0)
    del run["similarity_updates"], run["nodes_added"]
    s = summarize_strategy([run])
    assert s["similarity_updates_per_answer"] is None and s["nodes_added_per_answer"] is None


def test_eval_cost_reports_the_mean_firing_counts_per_answer():
    recs = [{"answer_tokens": 4, "wall_s": 1.0, "work": 10, "stats": {"similarity_updates": 6, "nodes_added": 1}},
            {"answer_tokens": 4, "wall_s": 1.0, "work": 10, "stats": {"similarity_updates": 0, "nodes_added": 0}}]
    c = cost_of(recs)
    assert c["similarity_updates_per_answer"] == 3.0 and c["nodes_added_per_answer"] == 0.5
