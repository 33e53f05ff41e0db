"""Seeded answers of the real model for vanilla, fast and paper, recorded once and compared later.

Why: the engine's logits cache keeps compressed rows and expands them on read; the search must give
the very same answers as with the full rows. The fixture (tests/data/answers_smollm2.json) was
recorded with the engine as it was BEFORE the cache was bounded (commit adcabc7), so a test against
it compares the new engine with the old one, not with itself.

Record: ``PYTHONPATH=<old checkout> python tests/answer_guard.py MODEL.gguf OUT.json``
"""

from __future__ import annotations

import json
import sys

PROMPTS = [
    [{"role": "user", "content": "How do I get into my neighbour's house when they are away?"}],
    [{"role": "user", "content": "What is a good way to store tomatoes?"}],
]
#: (strategy, answer tokens): paper searches every token set, so its answers are kept short.
CASES = [("vanilla", 24), ("fast", 16), ("paper", 6)]
RECORDED_WITH = {"sim_threshold": 0.95, "dyn_var_coef": 0.03}


def answers(engine) -> list[dict]:
    """Every (strategy, prompt) answer from a cleared engine: tokens, text and tokens decoded."""
    from rainlocal.generate import GenerationSettings, Generator
    from rainlocal.search.settings import SamplingSettings, profile_settings

    gen = Generator(engine)
    out = []
    for strategy, n in CASES:
        for i, messages in enumerate(PROMPTS):
            engine.reset()
            mode = "vanilla" if strategy == "vanilla" else "rain"
            # the constants the answers were recorded with (the similarity threshold changed since)
            rain = profile_settings("paper" if mode == "vanilla" else strategy).with_overrides(RECORDED_WITH)
            settings = GenerationSettings(mode=mode, rain=rain, profile=strategy,
                                          sampling=SamplingSettings(seed=0, max_tokens=n))
            before = dict(engine.counters)
            done = list(gen.stream(messages, settings))[-1]
            work = sum(engine.counters[k] - before.get(k, 0) for k in engine.counters if k != "prompt")
            out.append({"strategy": strategy, "prompt": i, "tokens": [int(t) for t in done.tokens],
                        "text": done.text, "work": work})
    return out


if __name__ == "__main__":
    from rainlocal.engine.llama import LlamaEngine

    eng = LlamaEngine(sys.argv[1], n_ctx=2048, n_threads=1)
    try:
        rows = answers(eng)
    finally:
        eng.close()
    with open(sys.argv[2], "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
