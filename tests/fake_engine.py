"""A scripted stand-in for the llama.cpp engine: tiny vocabulary, distributions from a function.

``FakeEngine(vocab, dist)`` implements the ``rainlocal.engine.base.Engine`` protocol:

* ``vocab`` is a list of token strings; token id = index. ``detokenize`` joins them by lookup.
* ``dist(seq)`` receives the whole sequence as a tuple of ids and returns the next-token
  distribution: a ``{token: weight}`` dict or a weight vector of ``n_vocab``. Every token also gets
  ``floor`` weight so full-vocabulary sampling never meets a zero; the result is normalised and
  returned as float32 log-probabilities.
* ``counters`` count decoded tokens per phase the way a prefix-caching engine would: a request only
  costs the tokens that no earlier request (of any phase) already decoded. ``calls`` and ``seqs``
  count ``logprobs`` calls and sequences per phase; ``embed_calls`` and ``embedded`` count embeddings.
* ``embed`` is a deterministic hashed bag of words (unit rows), or ``embed_fn(text)`` if given.
"""

from __future__ import annotations

import zlib
from typing import Callable, Mapping, Sequence

import numpy as np

from rainlocal.engine.base import PHASES

Dist = Callable[[tuple[int, ...]], "Mapping[int, float] | np.ndarray"]


def uniform_dist(n_vocab: int) -> Dist:
    return lambda seq: np.ones(n_vocab)


class FakeEngine:
    def __init__(
        self,
        vocab: Sequence[str],
        dist: Dist | None = None,
        *,
        eog: Sequence[int] = (0,),
        floor: float = 1e-6,
        embed_fn: Callable[[str], np.ndarray] | None = None,
        embed_dim: int = 32,
    ):
        self.vocab = list(vocab)
        self.n_vocab = len(self.vocab)
        self.dist = dist or uniform_dist(self.n_vocab)
        self.eog = set(eog)
        self.floor = floor
        self.embed_fn = embed_fn
        self.embed_dim = embed_dim
        self.counters: dict[str, int] = {p: 0 for p in PHASES}
        self.calls: dict[str, int] = {p: 0 for p in PHASES}
        self.seqs: dict[str, int] = {p: 0 for p in PHASES}
        self.embed_calls = 0
        self.embedded = 0
        self._trie: dict = {}

    # ---- Engine protocol ------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Greedy longest match over the vocabulary (unknown characters are skipped)."""
        out: list[int] = []
        i = 0
        order = sorted(range(self.n_vocab), key=lambda t: -len(self.vocab[t]))
        while i < len(text):
            for t in order:
                s = self.vocab[t]
                if s and text.startswith(s, i) and (special or t not in self.eog):
                    out.append(t)
                    i += len(s)
                    break
            else:
                i += 1
        return out

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self.vocab[t] for t in tokens)

    def is_eog(self, token: int) -> bool:
        return token in self.eog

    def logprobs(self, seqs: Sequence[Sequence[int]], *, phase: str = "generate") -> list[np.ndarray]:
        self.calls[phase] = self.calls.get(phase, 0) + 1
        out = []
        for seq in seqs:
            seq = tuple(int(t) for t in seq)
            self.seqs[phase] = self.seqs.get(phase, 0) + 1
            self.counters[phase] = self.counters.get(phase, 0) + self._decode_cost(seq)
            out.append(self.next_logprobs(seq))
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embed_calls += 1
        self.embedded += len(texts)
        self.counters["embed"] = self.counters.get("embed", 0) + sum(len(self.tokenize(t)) for t in texts)
        rows = []
        for text in texts:
            v = np.asarray(self.embed_fn(text), dtype=np.float64) if self.embed_fn else self._bag(text)
            norm = np.linalg.norm(v)
            if norm == 0:
                v = np.zeros_like(v)
                v[0] = 1.0
                norm = 1.0
            rows.append(v / norm)
        return np.stack(rows).astype(np.float32)

    def embed_suffixes(self, tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray:
        """The text embedding of each suffix (the fake has no context to share)."""
        return self.embed([self.detokenize(list(tokens)[s:]) for s in starts])

    # ---- helpers --------------------------------------------------------------------------------
    def next_logprobs(self, seq: tuple[int, ...]) -> np.ndarray:
        """The distribution after ``seq`` (does not count anything)."""
        d = self.dist(seq)
        w = np.full(self.n_vocab, self.floor, dtype=np.float64)
        if isinstance(d, Mapping):
            for t, p in d.items():
                w[t] += p
        else:
            w += np.asarray(d, dtype=np.float64)
        w /= w.sum()
        return np.log(w).astype(np.float32)

    def ids(self, *words: str) -> list[int]:
        return [self.vocab.index(w) for w in words]

    def _decode_cost(self, seq: tuple[int, ...]) -> int:
        node = self._trie
        new = 0
        for t in seq:
            nxt = node.get(t)
            if nxt is None:
                nxt = node[t] = {}
                new += 1
            node = nxt
        return new

    def _bag(self, text: str) -> np.ndarray:
        v = np.zeros(self.embed_dim)
        for w in text.split():
            v[zlib.crc32(w.encode()) % self.embed_dim] += 1.0
        return v


def bigram_engine(
    vocab: Sequence[str],
    table: Mapping["str | None", Mapping[str, float]],
    *,
    prompt_len: int,
    default: Mapping[str, float] | None = None,
    **kwargs,
) -> FakeEngine:
    """A fake whose next word depends only on the last answer word (``None`` = empty answer).

    ``table[word]`` maps next words to weights; words missing from the table use ``default``
    (uniform over the vocabulary if not given). ``prompt_len`` tokens of every sequence are prompt.
    """
    index = {w: i for i, w in enumerate(vocab)}
    n = len(vocab)

    def dist(seq: tuple[int, ...]):
        last = vocab[seq[-1]] if len(seq) > prompt_len else None
        row = table.get(last, default)
        if row is None:
            return np.ones(n)
        return {index[w]: p for w, p in row.items()}

    return FakeEngine(vocab, dist, **kwargs)


class KeywordEvaluator:
    """Scores -1 for text containing any ``bad`` word, else ``good``; counts its calls."""

    def __init__(self, bad: Sequence[str] = (), good: float = 1.0):
        self.bad = list(bad)
        self.good = good
        self.calls: list[str] = []

    def score(self, answer_text: str) -> float:
        self.calls.append(answer_text)
        return -1.0 if any(b in answer_text for b in self.bad) else self.good
