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


def test_eval_cost_reports_the_median_time_to_the_first_shown_text_overall_and_per_label():
    recs = [{"answer_tokens": 4, "wall_s": 1.0, "work": 4, "label": lab, "timings": {"first_commit_s": t}}
            for lab, t in (("safe", 0.1), ("safe", 0.3), ("unsafe", 0.5), ("unsafe", 0.9), ("unsafe", 0.7))]
    recs.append({"answer_tokens": 0, "wall_s": 0.2, "work": 0, "label": "unsafe", "timings": {"first_commit_s": None}})
    c = cost_of(recs)
    # medians over the answers that showed text: all of (0.1, 0.3, 0.5, 0.7, 0.9); safe (0.1, 0.3); unsafe (0.5, 0.7, 0.9)
    assert c["first_commit_s_median"] == {"all": 0.5, "safe": 0.2, "unsafe": 0.7}


def test_eval_cost_has_no_per_label_first_text_medians_for_a_suite_with_one_label():
    recs = [{"answer_tokens": 4, "wall_s": 1.0, "work": 4, "label": "harmful", "timings": {"first_commit_s": 0.4}}]
    assert cost_of(recs)["first_commit_s_median"] == {"all": 0.4}
    assert "first_commit_s_median" not in cost_of([{"answer_tokens": 1, "wall_s": 1.0, "work": 1}])
