"""The small interface the search and the judge use to talk to a language model.

The search works on plain token sequences (prompt + answer so far + candidate). An engine answers
"what is the next-token distribution after each of these sequences?" and keeps whatever it needs to
make that cheap: the llama.cpp engine keeps recently used sequences in one unified KV cache and
decodes only the part of each request that no cached sequence already holds. Branching, rewinding
and prefix sharing are therefore the engine's business, and a scripted fake engine that computes
distributions from token tuples can drive the same search in tests.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

#: Phases that tokens decoded are counted under (``Engine.counters``).
PHASES = ("prompt", "draft", "generate", "rollout", "judge", "embed")


@runtime_checkable
class Engine(Protocol):
    """What RAIN, vanilla decoding and the self-evaluation judge need from a model."""

    #: Size of the vocabulary (length of every log-prob vector).
    n_vocab: int
    #: Tokens decoded so far, by phase (keys from ``PHASES``); machine-independent work counter.
    counters: dict[str, int]

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Tokens of ``text`` without a BOS token; ``special`` parses control tokens."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` (special tokens rendered as text)."""
        ...

    def is_eog(self, token: int) -> bool:
        """True for end-of-sequence / end-of-turn tokens."""
        ...

    def logprobs(self, seqs: Sequence[Sequence[int]], *, phase: str = "generate") -> list[np.ndarray]:
        """Next-token log-probabilities after each whole sequence, as float32 arrays of n_vocab.

        Sequences are complete (they start with the prompt, BOS included where the model wants one).
        The engine decodes the requests together and reuses any cached prefix; the decoded tokens are
        counted under ``phase``. Raises ``ContextOverflowError`` for a sequence longer than the context.
        """
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding row per text, unit length, from the same model (for similarity updates)."""
        ...

    def embed_suffixes(self, tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray:
        """One unit-length embedding row per start, of the text ``tokens[start:]`` (one pass)."""
        ...


def counter_delta(engine: Engine, start: dict[str, int]) -> dict[str, int]:
    """Tokens decoded by phase since ``start`` (a copy of ``engine.counters`` taken earlier)."""
    now = dict(engine.counters)
    return {k: int(now.get(k, 0)) - int(start.get(k, 0)) for k in sorted(set(now) | set(start))}


def sequence_keys(seqs: Sequence[Sequence[int]], n_ctx: int) -> list[tuple[int, ...]]:
    """Each requested sequence as a hashable key, checked the same way by every engine: not empty and
    within the context (``ContextOverflowError`` otherwise)."""
    from rainlocal.errors import ContextOverflowError

    keys = []
    for seq in seqs:
        key = tuple(int(t) for t in seq)
        if not key:
            raise ValueError("cannot compute logits of an empty sequence")
        if len(key) > n_ctx:
            raise ContextOverflowError(f"sequence of {len(key)} tokens does not fit the context of {n_ctx} tokens")
        keys.append(key)
    return keys


def split_cached(seqs: Sequence[Sequence[int]], n_ctx: int, lookup) -> tuple[list, dict[tuple[int, ...], list[int]]]:
    """A ``logprobs`` request split the same way by every engine: the rows ``lookup(key)`` already has
    (``None`` where it has none) and, for the rest, each distinct sequence with the request positions
    that asked for it (a sequence asked twice is decoded once)."""
    results: list = [None] * len(seqs)
    todo: dict[tuple[int, ...], list[int]] = {}
    for i, key in enumerate(sequence_keys(seqs, n_ctx)):
        cached = lookup(key)
        if cached is not None:
            results[i] = cached
        else:
            todo.setdefault(key, []).append(i)
    return results, todo


# Texts used once per model to centre raw pooled embeddings: raw cosine between unrelated texts is
# ~0.8 on small models, which makes a 0.95 similarity threshold meaningless without centring.
CENTRING_TEXTS = (
    "The weather today is sunny and warm.",
    "I cannot help with that request.",
    "Here is a recipe for chocolate cake.",
    "Sure, here is how to do it step by step:",
    "The capital of France is Paris.",
    "Please be careful, this could be dangerous.",
    "def add(a, b): return a + b",
    "Thank you for your question!",
    "He walked slowly down the empty street.",
    "Numbers like 42 and 3.14 appear often.",
    "I don't know the answer to that.",
    "Violence is never the right solution.",
)

#: Tokens kept of one embedded text (texts are a node's set plus a rollout: short).
EMBED_MAX = 512


def text_means(states: Sequence[np.ndarray]) -> np.ndarray:
    """One row per text: the mean of its per-token hidden states (mean pooling)."""
    return np.stack([st.mean(axis=0) for st in states])


def centred_units(raw: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Rows centred by ``centre`` (the mean embedding of ``CENTRING_TEXTS``) and scaled to unit length."""
    centred = raw - centre
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.maximum(norms, 1e-9)).astype(np.float32)


def suffix_means(states: np.ndarray, starts: Sequence[int], cut: int) -> np.ndarray:
    """Mean of ``states[start - cut:]`` for each start (clamped to the rows there are): the suffix
    embeddings of one decoded sequence whose first ``cut`` tokens were dropped."""
    n = len(states)
    sums = np.cumsum(states[::-1], axis=0)[::-1]
    rows = []
    for s in starts:
        i = min(max(int(s) - cut, 0), n - 1)
        rows.append(sums[i] / (n - i))
    return np.stack(rows)
