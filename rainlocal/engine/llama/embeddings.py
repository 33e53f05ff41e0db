"""Embeddings for similarity updates: the answering model's own hidden states, mean-pooled.

A second small context on the same weights (embeddings on, no pooling) decodes the texts, so the
branches of the main context are never disturbed. Pooled states are centred by the mean embedding
of fixed texts and normalised, because raw pooled states of unrelated texts are very alike.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from rainlocal.engine.base import CENTRING_TEXTS, EMBED_MAX, centred_units, suffix_means, text_means
from rainlocal.errors import EngineError



class Embedder:
    """The embedding context of one ``LlamaEngine`` (created on first use, freed by ``close``)."""

    def __init__(self, engine):
        self._eng = engine
        self._embed_ctx = None
        self._centre: np.ndarray | None = None
        self._last_path: tuple[list[int], np.ndarray | None] = ([], None)  # sequence 0's tokens, states

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled hidden states of each text from a second small context on the same weights,
        centred by the mean embedding of fixed texts and normalised to unit length."""
        if not texts:
            return np.zeros((0, self._n_embd_model()), dtype=np.float32)
        return self._unit(text_means(self._token_states([self._embed_tokens(t) for t in texts])))

    def embed_suffixes(self, tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray:
        """One embedding per start: the mean hidden state of ``tokens[start:]``, all from ONE pass.

        RAIN embeds, for every node on a search path, the text from that node's start through the
        rollout; those texts are suffixes of one another, so one decode serves them all (each
        suffix's states are read in the context of the path before it)."""
        toks = list(tokens)[-EMBED_MAX:]
        cut = len(tokens) - len(toks)
        if not toks:
            raise ValueError("embed_suffixes needs at least one token")
        return self._unit(suffix_means(self._path_states(toks), starts, cut))

    def forget_path(self) -> None:
        """Decode the next path from scratch (a reset engine answers as a fresh one)."""
        self._last_path = ([], None)

    def _path_states(self, toks: list[int]) -> np.ndarray:
        """Per-token states of one search path, decoding only what differs from the last path.

        Successive searches of a step walk paths that share their first token sets; a token's state
        depends on the tokens before it only, so the shared prefix's states (and its KV, kept as
        sequence 0) are reused and the rest is decoded after it: the same states up to the float
        noise of another batch split."""
        last, states = self._last_path
        common = 0
        for a, b in zip(last, toks):
            if a != b:
                break
            common += 1
        common = min(common, len(toks) - 1)  # the last token is decoded again: at least one new row
        if common <= 0:
            new = self._token_states([toks])[0]
        else:
            ll = self._eng._ll
            ll.llama_memory_seq_rm(ll.llama_get_memory(self._embed_ctx), 0, common, -1)
            self._eng.counters["embed"] += len(toks) - common
            new = np.concatenate([states[:common],
                                  self._decode_in_steps([(int(t), common + j, 0) for j, t in enumerate(toks[common:])])])
        self._last_path = (toks, new)
        return new

    def _embed_tokens(self, text: str) -> list[int]:
        return self._eng.tokenize(text or " ")[:EMBED_MAX] or [self._eng.eos_token or 0]

    def _n_embd_model(self) -> int:
        return int(self._eng._ll.llama_model_n_embd(self._eng.model))

    def _unit(self, raw: np.ndarray) -> np.ndarray:
        """Centre by the mean embedding of fixed texts, then normalise rows to unit length."""
        if self._centre is None:
            self._centre = self._centre_vector()
        return centred_units(raw, self._centre)

    #: Bytes of logits one ``llama_decode`` call may produce. llama.cpp sizes the context's output
    #: buffer for the outputs of one call, logits included (n_vocab floats per token, even with
    #: embeddings on): a 512-token text in one call held 100 MB (SmolLM2) to 540 MB (gemma-3) of
    #: logits nobody reads. So texts are decoded in calls of at most ``step`` tokens (64 for SmolLM2's
    #: 49k vocabulary, 16 for gemma-3's 262k); the KV cache carries a text across calls.
    OUTPUT_BYTES = 16 << 20
    #: The context's KV size: the longest text embedded (``EMBED_MAX``) fits.
    CAP = 2048

    @property
    def step(self) -> int:
        """Tokens per embedding decode call (see ``OUTPUT_BYTES``)."""
        return max(8, min(64, self.OUTPUT_BYTES // (4 * max(int(self._eng.n_vocab), 1))))

    def _centre_vector(self) -> np.ndarray:
        """Mean pooled state of the centring texts, all decoded in ONE call of a short-lived context:
        texts that share a call get (slightly) other states than texts decoded alone, and the centre
        moves every embedding, so it is computed the one way it always was."""
        seqs = [self._embed_tokens(t) for t in CENTRING_TEXTS]
        total = sum(len(q) for q in seqs)
        if total * 4 * int(self._eng.n_vocab) > 2 * self.OUTPUT_BYTES:
            # a large vocabulary (gemma-3: 115 MB of logits for one call): the usual small calls
            return text_means(self._token_states(seqs)).mean(axis=0)
        ctx, batch = self._new_context(total, len(seqs))
        try:
            entries = [(int(t), j, k) for k, seq in enumerate(seqs) for j, t in enumerate(seq)]
            self._eng.counters["embed"] += total
            states = self._decode_states(ctx, entries, batch)
        finally:
            self._eng._ll.llama_batch_free(batch)
            self._eng._ll.llama_free(ctx)
        bounds = np.cumsum([len(seq) for seq in seqs])[:-1]
        return text_means(np.split(states, bounds)).mean(axis=0)

    def _new_context(self, n_batch: int, n_seq: int):
        ll = self._eng._ll
        cp = ll.llama_context_default_params()
        cp.n_ctx = self.CAP
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq  # llama.cpp: at most n_batch sequences
        cp.kv_unified = True
        cp.embeddings = True
        cp.pooling_type = ll.LLAMA_POOLING_TYPE_NONE
        cp.n_threads = self._eng.n_threads
        cp.n_threads_batch = self._eng.n_threads
        ctx = ll.llama_init_from_model(self._eng.model, cp)
        if not ctx:
            raise EngineError("cannot create the embedding context")
        self._n_embd = self._n_embd_model()
        return ctx, ll.llama_batch_init(n_batch, 0, 1)

    def _token_states(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """Per-token hidden states (before the output layer) of each token list, decoded on their own
        in a separate embedding context (never disturbing the branches of the main context)."""
        ll = self._eng._ll
        step = self.step
        if self._embed_ctx is None:
            self._embed_ctx, self._embed_batch = self._new_context(step, step)
        ctx = self._embed_ctx
        mem = ll.llama_get_memory(ctx)
        self._last_path = ([], None)  # the calls below clear the context
        out: list[np.ndarray] = []
        for group in _calls(seqs, step):
            # One call holds whole texts (a text decoded with others gets the same states as alone);
            # a text longer than ``step`` is decoded alone over several calls, its KV carried along.
            ll.llama_memory_clear(mem, True)
            entries = [(int(t), j, k) for k, seq in enumerate(group) for j, t in enumerate(seq)]
            for seq in group:
                self._eng.counters["embed"] += len(seq)
            states = self._decode_in_steps(entries)
            offset = 0
            for seq in group:
                out.append(states[offset : offset + len(seq)])
                offset += len(seq)
        return out

    def _decode_in_steps(self, entries: list[tuple[int, int, int]]) -> np.ndarray:
        """States of ``(token, position, sequence)`` entries, decoded in the embedding context in calls of
        at most ``step`` tokens (the KV cache carries a sequence across calls)."""
        return np.concatenate([self._decode_states(self._embed_ctx, entries[a : a + self.step])
                               for a in range(0, len(entries), self.step)])

    def _decode_states(self, ctx, chunk: list[tuple[int, int, int]], batch=None) -> np.ndarray:
        ll, b = self._eng._ll, batch if batch is not None else self._embed_batch
        for n, (tok, pos, sid) in enumerate(chunk):
            b.token[n] = tok
            b.pos[n] = pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = sid
            b.logits[n] = 1
        b.n_tokens = len(chunk)
        t0 = time.perf_counter()
        rc = ll.llama_decode(ctx, b)
        self._eng.decode_seconds += time.perf_counter() - t0
        self._eng.decode_calls += 1
        if rc != 0:
            raise EngineError(f"embedding decode failed with code {rc}")
        ptr = ll.llama_get_embeddings(ctx)
        if not ptr:
            raise EngineError("llama.cpp returned no token embeddings")
        return np.ctypeslib.as_array(ptr, shape=(len(chunk), self._n_embd)).astype(np.float32)

    def close(self) -> None:
        if self._embed_ctx:
            ll = self._eng._ll
            ll.llama_batch_free(self._embed_batch)
            ll.llama_free(self._embed_ctx)
            self._embed_ctx = None
            self._last_path = ([], None)


def _calls(seqs: list[list[int]], step: int) -> list[list[list[int]]]:
    """Group texts, in order, into calls of at most ``step`` tokens; a longer text is a group alone."""
    groups: list[list[list[int]]] = []
    size = step
    for seq in seqs:
        if len(seq) > step or size + len(seq) > step or not groups:
            groups.append([])
            size = 0
        groups[-1].append(seq)
        size = step if len(seq) > step else size + len(seq)
    return groups
