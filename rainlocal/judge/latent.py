"""The latent self-evaluation: the model's own hidden states, read by its fitted probes, judge a partial answer.

``s = 1 - 2 P(the request is unsafe) P(the answer so far complies)`` in [-1, 1], the same scale as the
prompted judge's scores, so the search's rules (Eq. 1's ``(q + 1) / 2``, ``V``, the fast profile's
accept/hold) apply unchanged. P(unsafe) is read once per answer at the prompt's last token and, where the
probe file has a topic probe, averaged in log-odds with what the answer's content says of the request
(``probes.harm_score``); P(complies) from the mean state over the answer's latest tokens (``latent.features``).

Nothing is decoded for it: the search's drafts, candidates and rollouts already decoded the answer's
tokens and the engine kept the probe layer's rows (``engine.hidden_states``); only a token that was
sampled but never fed back (a rollout's last) is decoded, as the extension of its cached branch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rainlocal.latent.features import reply_window
from rainlocal.latent.probes import ProbeSet, harm_score


class LatentEvaluator:
    """Scores answers to one prompt with ``probes`` on ``engine``'s states.

    ``prompt`` is the prompt's tokens on ``engine``. ``score_tokens`` takes the answer's tokens as the
    search made them (the states are then already there); ``score`` takes text (re-tokenized, e.g. for a
    ``--judge`` model with another tokenizer, or text cut at a stop string)."""

    def __init__(self, engine: Any, probes: ProbeSet, prompt: Sequence[int], *, source: Any = None,
                 topic_from: int = 0):
        """``source``: the answering engine when it is not ``engine`` (a ``--judge`` model): its tokens are
        turned into text and read again with the judge's tokenizer. ``topic_from``: an answer shorter than
        this many tokens is judged by the request's reading alone (the topic probe is not heard yet)."""
        self.topic_from = int(topic_from)
        self.engine = engine
        self.source = source if source is not engine else None
        self.probes = probes
        self.prompt = [int(t) for t in prompt]
        engine.want_layers([probes.layer])
        self._p_unsafe: float | None = None
        self.calls = 0
        self.cache_hits = 0  # (the searches cache scores by text themselves)
        self.last: dict[str, float] = {}

    @property
    def p_unsafe(self) -> float:
        """P(the request is unsafe), read at the prompt's last token (known before the first answer token)."""
        if self._p_unsafe is None:
            st = self.engine.hidden_states(self.prompt, len(self.prompt) - 1)
            self._p_unsafe = self.probes.p_unsafe(st[0, 0])
        return self._p_unsafe

    @property
    def score_floor(self) -> float:
        """The score of a sure compliance as the request's reading alone has it, ``1 - 2 P(unsafe)``: the fast
        profile's gate lets an answer through unchecked where this reaches ``accept`` (the request reads
        safe). (An answer's content can still move its score either way once it is checked.)"""
        return 1.0 - 2.0 * self.p_unsafe

    def score_tokens(self, answer: Sequence[int]) -> float:
        if self.source is not None:
            return self.score(self.source.detokenize([int(t) for t in answer]))
        toks = [int(t) for t in answer]
        while toks and self.engine.is_eog(toks[-1]):
            toks.pop()
        pu = self.p_unsafe
        self.calls += 1
        if not toks:  # nothing said yet: no evidence either way
            harm = harm_score(pu, 0.5)
            self.last = {"p_unsafe": pu, "p_comply": 0.5, "harm": harm}
        else:
            st = self.engine.hidden_states(self.prompt + toks, len(self.prompt))
            harm, self.last = self.probes.judged_harm(pu, reply_window(st[:, 0, :]),
                                                      topic=len(toks) >= self.topic_from)
        return float(1.0 - 2.0 * harm)

    def embed_suffixes(self, context: Sequence[int], tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray | None:
        """RAIN's embeddings for the similarity update (Eq. 2) and dynamic node addition from the same states:
        the mean probe-layer state of ``tokens[start:]`` (read after ``context``) for each start, centred by the
        mean reply state the probes were fitted on and normalised, so nothing is decoded for them either.
        None where the states are another model's (a ``--judge`` model)."""
        if self.source is not None or not len(tokens):
            return None
        from rainlocal.engine.base import centred_units, suffix_means

        ctx = [int(t) for t in context]
        st = self.engine.hidden_states(ctx + [int(t) for t in tokens], len(ctx))[:, 0, :]
        return centred_units(suffix_means(st, starts, 0), self.probes.probes["comply"].mean.astype(np.float32))

    def stop_reading(self) -> None:
        """No more scores are needed for this answer (the fast loop's gate let it pass): the engine stops
        copying states out of its decodes, so the rest of the answer decodes exactly as plain decoding."""
        self.engine.want_layers([])

    def score(self, answer_text: str) -> float:
        text = answer_text.strip()
        source, self.source = self.source, None  # the text is tokenized by the judge itself
        try:
            return self.score_tokens(self.engine.tokenize(text) if text else [])
        finally:
            self.source = source

    def read_ahead(self, texts: Sequence[str]) -> None:
        """Read the prompt's and these answers' states only as deep as the probe layer, all in one batch
        (``engine.read_states``), before they are scored. For answers the search never decoded (the
        evaluation's checks of this judge on labelled replies), each of which would otherwise cost a
        whole decode; states already kept are not read again."""
        read = getattr(self.engine, "read_states", None)
        if read is None:
            return
        seqs = [self.prompt + self.engine.tokenize(t.strip()) for t in texts if t.strip()]
        read(seqs or [self.prompt])

    def score_many(self, texts: Sequence[str]) -> list[float]:
        return [self.score(t) for t in texts]


def harm_of(score: float) -> float:
    """The harm estimate behind a latent score (for display: ``s = 1 - 2 harm``)."""
    return float(np.clip((1.0 - score) / 2.0, 0.0, 1.0))
