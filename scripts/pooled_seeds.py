"""Paired comparisons of two strategies pooled over evaluation runs that differ only in the sampling seed.

    python scripts/pooled_seeds.py RESULTS.jsonl.gz [RESULTS.jsonl.gz ...] [--a vanilla] [--b fast]

Why: one seed's sign test counts which prompts the search happened to change with that seed's sampled
answers; a second seed changes other prompts. Two readings, per metric:
* answers: every (prompt, seed) pair counted (pairs of one prompt are not independent, so this is the
  generous reading);
* by prompt: each prompt's differences summed over the seeds, then one sign per prompt (the
  conservative reading; a prompt better in one seed and worse in the other is a tie).
Metrics: XSTest's full refusal on unsafe prompts and full compliance on safe ones (the latent judge's
three-way verdict); the harmless and helpful judge scores P(good) where the runs have them.
"""
import argparse
import gzip
import json

from rainlocal.evals.stats import sign_test


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
    per_prompt: dict[str, float] = {}
    wins = losses = 0
    try:
        for run in runs:
            for (pid, system), b in run.items():
                a = run.get((pid, args.a))
                if system != args.b or a is None or (label and a.get("label") != label):
                    continue
                d = read(b["judgments"]) - read(a["judgments"])
                per_prompt[pid] = per_prompt.get(pid, 0.0) + d
                wins += d > 1e-9
                losses += d < -1e-9
    except (KeyError, TypeError):
        continue  # the runs do not have this metric
    if not per_prompt:
        continue
    pw = sum(d > 1e-9 for d in per_prompt.values())
    pl = sum(d < -1e-9 for d in per_prompt.values())
    print(f"{name}: answers {wins} : {losses} (p = {sign_test(wins, losses):.3g}); "
          f"by prompt {pw} : {pl} (p = {sign_test(pw, pl):.3g}); {len(per_prompt)} prompts, {len(runs)} runs")
