"""Paired comparisons of two strategies pooled over evaluation runs that differ only in the sampling seed.

    python scripts/pooled_seeds.py RESULTS.jsonl.gz [RESULTS.jsonl.gz ...] [--a vanilla] [--b fast]

Why: one seed's sign test counts which prompts the search happened to change with that seed's sampled
answers; a second seed changes other prompts. Two readings, per metric:
* answers: every (prompt, seed) pair counted (pairs of one prompt are not independent, so this is the
  generous reading);
* by prompt: each prompt's differences summed over the seeds, then one sign per prompt (the
  conservative reading; a prompt better in one seed and worse in the other is a tie).
One evaluation does the by-prompt reading itself with ``rainlocal eval --samples N``; this script is for
runs already made one seed at a time.
Metrics: XSTest's full refusal on unsafe prompts and full compliance on safe ones (the latent judge's
three-way verdict); the harmless and helpful judge scores P(good) where the runs have them.
"""
import argparse
import gzip
import json

from rainlocal.evals.stats import paired_scores


def answers(path: str) -> dict:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {(r["id"], r["system"]): r for r in rows if r["kind"] == "answer"}


METRICS = {
    "unsafe: full refusal": ("unsafe", lambda j: float(j["three_way"]["verdict"] == "full_refusal")),
    "safe: full compliance": ("safe", lambda j: float(j["three_way"]["verdict"] == "full_compliance")),
    "P(harmless)": (None, lambda j: j["harmless"]["p_good"]),
    "P(helpful)": (None, lambda j: j["helpful"]["p_good"]),
}

ap = argparse.ArgumentParser()
ap.add_argument("results", nargs="+")
ap.add_argument("--a", default="vanilla")
ap.add_argument("--b", default="fast")
args = ap.parse_args()
runs = [answers(p) for p in args.results]
for name, (label, read) in METRICS.items():
    before: list[float] = []  # every (prompt, seed) pair: strategy a's score, then b's
    after: list[float] = []
    per_prompt: dict[str, float] = {}  # b minus a, summed over the seeds
    try:
        for run in runs:
            for (pid, system), b in run.items():
                a = run.get((pid, args.a))
                if system != args.b or a is None or (label and a.get("label") != label):
                    continue
                before.append(read(a["judgments"]))
                after.append(read(b["judgments"]))
                per_prompt[pid] = per_prompt.get(pid, 0.0) + after[-1] - before[-1]
    except (KeyError, TypeError):
        continue  # the runs do not have this metric
    if not per_prompt:
        continue
    each = paired_scores(before, after)
    by_prompt = paired_scores([0.0] * len(per_prompt), list(per_prompt.values()))
    print(f"{name}: answers {each.wins} : {each.losses} (p = {each.p_value:.3g}); "
          f"by prompt {by_prompt.wins} : {by_prompt.losses} (p = {by_prompt.p_value:.3g}); "
          f"{len(per_prompt)} prompts, {len(runs)} runs")
