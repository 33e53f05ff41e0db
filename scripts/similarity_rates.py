"""How often similarity updates and dynamic node addition fire on a real model, and on what values.

Runs RAIN (paper profile by default) on a few HH prompts and records every sibling cosine similarity
the backup compares with ``sim_threshold`` and every embedding spread (divided by the set length)
dynamic addition compares with ``dyn_var_coef``; prints per-answer firing counts and the
distributions' quantiles as JSON. Used to calibrate both thresholds (README, "Similarity
thresholds"):

    python scripts/similarity_rates.py MODEL HH.jsonl -p 3 -n 16 [--set sim_threshold=0.5 ...]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("-p", type=int, default=3)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)

    import rainlocal.search.backup as backup
    import rainlocal.search.expand as expand
    from rainlocal.catalog import model_path
    from rainlocal.engine.llama import LlamaEngine
    from rainlocal.evals.bestofn import fresh_start
    from rainlocal.generate import GenerationSettings, Generator
    from rainlocal.search.settings import SamplingSettings, profile_settings

    sims: list[float] = []
    spreads: list[float] = []
    cosine = backup.cosine

    def recording_cosine(a, b):
        s = cosine(a, b)
        sims.append(s)
        return s

    spread = expand.embedding_spread
    current: dict = {}

    def recording_spread(node):
        v = spread(node)
        if v is not None:
            spreads.append(v / expand.set_length(current["settings"], node.depth + 1))
        return v

    backup.cosine = recording_cosine
    expand.embedding_spread = recording_spread

    overrides = dict(kv.split("=", 1) for kv in args.set)
    rain = profile_settings(args.profile).with_overrides(overrides)
    current["settings"] = rain
    path = args.model if args.model.endswith(".gguf") else str(model_path(args.model))
    eng = LlamaEngine(path, n_ctx=2048, n_threads=1)
    gen = Generator(eng)
    settings = GenerationSettings(mode="rain", rain=rain, profile=args.profile,
                                  sampling=SamplingSettings(seed=0, max_tokens=args.n))
    rows = [json.loads(line) for line in open(args.data)][: args.p]
    answers = []
    for row in rows:
        fresh_start(gen, settings)
        s0, p0 = len(sims), len(spreads)
        done = list(gen.stream(row["messages"], settings))[-1]
        answers.append({"id": row["id"], "tokens": len(done.tokens), "text": done.text,
                        "similarity_updates": done.stats.get("similarity_updates"),
                        "nodes_added": done.stats.get("nodes_added"), "searches": done.stats.get("searches"),
                        "sim_comparisons": len(sims) - s0, "spread_checks": len(spreads) - p0})
    eng.close()

    def quantiles(xs):
        if not xs:
            return {}
        a = np.asarray(xs)
        return {f"q{int(q * 100)}": round(float(np.quantile(a, q)), 4) for q in (0.5, 0.75, 0.9, 0.95, 0.99)} | {
            "min": round(float(a.min()), 4), "max": round(float(a.max()), 4), "count": len(xs)}

    out = {"model": args.model, "profile": args.profile, "overrides": overrides,
           "sim_threshold": rain.sim_threshold, "dyn_var_coef": rain.dyn_var_coef, "answers": answers,
           "similarity_updates_per_answer": float(np.mean([a["similarity_updates"] for a in answers])),
           "nodes_added_per_answer": float(np.mean([a["nodes_added"] for a in answers])),
           "sibling_cosine": quantiles(sims), "spread_per_set_length": quantiles(spreads),
           "sims": [round(x, 4) for x in sims], "spreads": [round(x, 5) for x in spreads]}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
