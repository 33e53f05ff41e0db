"""The answering model's own replies to the labelled prompts, so its probes see its own style.

Replies written by five other chat models are not the model's own: a compliance probe fitted on them
alone lost much of its threshold on a small model's own replies (README, "Latent judge"). So the fit
adds the model's own short replies to the same prompts, labelled by the prompt's label and a
compliance label: read by a person for the shipped probes (``latent/data/own_labels/``), and by the
refusal-string rule (``evals.refusal``) when ``rainlocal calibrate`` fits a new model on its own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from rainlocal.evals.refusal import refusal_match
from rainlocal.latent.features import WINDOW
from rainlocal.search.sampling import sample_token


def generate_replies(engine, prompts: Sequence[list[int]], *, max_tokens: int = WINDOW, temp: float = 0.8,
                     top_k: int = 40, top_p: float = 0.95, seed: int = 0, batch: int = 32,
                     progress: Callable[[int], None] | None = None,
                     read: Callable[[list[int], list[int]], None] | None = None) -> list[list[int]]:
    """Plain sampled replies (vanilla's defaults), ``batch`` prompts decoded side by side. ``read(prompt,
    reply)`` is called for each reply while its branch is still in the engine (the fit reads its states
    there instead of decoding it again)."""
    out: list[list[int]] = []
    batch = max(1, min(batch, int(getattr(engine, "pool", 1 << 20)) // 160))  # the branches must fit the KV pool
    for a in range(0, len(prompts), batch):
        group = [list(p) for p in prompts[a:a + batch]]
        rng = np.random.default_rng(seed + a)
        replies: list[list[int]] = [[] for _ in group]
        live = list(range(len(group)))
        for _ in range(max_tokens):
            if not live:
                break
            rows = engine.logprobs([group[i] + replies[i] for i in live], phase="generate")
            still = []
            for i, lp in zip(live, rows):
                tok = sample_token(lp, rng, temp=temp, top_k=top_k, top_p=top_p)
                if engine.is_eog(tok):
                    continue
                replies[i].append(tok)
                still.append(i)
            live = still
        if read is not None:
            for p, r in zip(group, replies):
                read(p, r)
        out.extend(replies)
        engine.reset()
        if progress is not None:
            progress(len(group))
    return out


def rule_complied(text: str) -> bool:
    """The refusal-string rule's compliance label (crude: see ``evals.refusal``)."""
    return refusal_match(text) is None and bool(text.strip())
