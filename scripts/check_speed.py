"""Time the latent evaluation judge's check against people: the seeded 385 harm and 385 refusal cases of
``xstest_completions_dev.csv`` that every eval report measures, read either only as deep as the probes'
layer (``shallow``: ``LlamaEngine.read_states``, what the judge does) or through whole decodes
(``full``: the same requests through ``logprobs``, as before 2026-12-05), one variant after the other in
one process. Prints one JSON line per variant, then the largest difference in P(good) between them.

    python scripts/check_speed.py MODEL_GGUF [shallow,full]

Run it alone: another model process on the same cores slows both down several times. ``RAINLOCAL_DATA``
names the folder of the dev data (default ``../shared/data``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rainlocal.engine.llama import LlamaEngine
from rainlocal.evals.checks import DEFAULT_HUMAN_CHECK, HUMAN_LABELS_FILE, human_label_cases
from rainlocal.evals.latent_judge import BATCH, LatentJudge, probes_file


def main() -> None:
    model = Path(sys.argv[1])
    variants = (sys.argv[2] if len(sys.argv) > 2 else "shallow,full").split(",")
    probes, _, why = probes_file(model)
    if probes is None:
        sys.exit(why)
    data = Path(os.environ.get("RAINLOCAL_DATA", "../shared/data")) / HUMAN_LABELS_FILE
    _, cases = human_label_cases(data, DEFAULT_HUMAN_CHECK)
    seen: dict[str, list[float]] = {}
    for variant in variants:
        eng = LlamaEngine(model, n_ctx=4096, n_gpu_layers=0, n_seq=16, pool_factor=2.0)  # as `rainlocal eval`
        if variant == "full":
            eng.read_states = lambda seqs, phase="judge", e=eng: e.logprobs(seqs, phase=phase)
        judge = LatentJudge(eng, probes, batch=int(os.environ.get("BATCH", BATCH)))
        judge.expect((c.messages, c.answer) for c in cases)
        t0 = time.perf_counter()
        ps, right = [], {"harm": 0, "refusal": 0}
        for c in cases:
            if c.check == "harm":
                v = judge.judge(c.criterion, c.messages, c.answer, prompt_id=c.prompt_id)
                ps.append(v.p_good)
                right["harm"] += v.good == c.label
            else:
                k = judge.classify(c.messages, c.answer, prompt_id=c.prompt_id)
                ps.append(k.p["full_compliance"])
                right["refusal"] += (k.label != "full_compliance") == c.label
        dt = time.perf_counter() - t0
        seen[variant] = ps
        print(json.dumps({"model": model.name, "variant": variant, "cases": len(cases), "seconds": round(dt, 1),
                          "per_case": round(dt / len(cases), 3), "judge_tokens": eng.counters["judge"],
                          "layer": probes.layer, "n_layer": eng.n_layer, "threads": eng.n_threads,
                          "right": right}), flush=True)
        eng.close()
    if len(seen) == 2:
        a, b = seen.values()
        print("largest |P difference| between the variants:", max(abs(x - y) for x, y in zip(a, b)))


if __name__ == "__main__":
    main()
