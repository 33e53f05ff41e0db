"""The llama.cpp engine: one model, one unified-KV context holding many branches.

RAIN explores a tree of short continuations. Here every branch is a llama.cpp *sequence* in one
context with a unified KV cache: branches share their common prefix by metadata (``seq_cp``), a
rewind is a truncation (``seq_rm`` of a tail), and the tails of many branches are decoded together
in one ``llama_decode`` batch. Callers simply ask for the next-token distribution after whole token
sequences; the slot table (``slots.py``) finds the cached sequence with the longest common prefix and
decodes only what is new. Nothing is re-decoded per candidate and no whole-context state is saved.

Recurrent and hybrid models cannot truncate a sequence; they are refused with a clear message.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from rainlocal.engine.base import PHASES, split_cached
from rainlocal.engine.llama.cache import EXACT_BYTES, FULL_BYTES, TOP_BYTES, LogitsCache
from rainlocal.engine.llama.embeddings import Embedder
from rainlocal.engine.llama.hidden import HiddenCapture, callback_interrupts, prefix_hashes
from rainlocal.engine.llama.log import install_log_callback, last_llama_error, log_errors
from rainlocal.engine.llama.markup import tokenize_parts
from rainlocal.engine.llama.slots import Slot, SlotTable, common_prefix
from rainlocal.engine.llama.threads import default_threads
from rainlocal.errors import ContextOverflowError, EngineError, ModelError


class LlamaEngine:
    """A loaded GGUF model with a multi-branch context; implements ``rainlocal.engine.Engine``."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_gpu_layers: int = -1,
        n_threads: int | None = None,
        seed: int = 0,
        n_seq: int = 128,
        pool_factor: float = 1.5,
        verbose: bool = False,
        cache_bytes: int = FULL_BYTES + EXACT_BYTES + TOP_BYTES,
        hidden: bool = True,
    ):
        import llama_cpp

        from rainlocal.gguf_info import validate_gguf

        self._ll = llama_cpp
        self.path = Path(model_path)
        validate_gguf(self.path)
        install_log_callback(verbose)
        llama_cpp.llama_backend_init()
        log_errors().clear()

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 999
        self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            detail = last_llama_error() or "llama.cpp could not load it"
            raise ModelError(f"cannot load model {self.path}: {detail}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.model))
        self.seed = seed

        if llama_cpp.llama_model_is_recurrent(self.model) or _is_hybrid(llama_cpp, self.model):
            self.close()
            raise ModelError(
                f"{self.path.name}: recurrent/hybrid models (Mamba, RWKV, ...) cannot rewind a branch by "
                "truncation, which RAIN needs; use a transformer model"
            )

        #: Per-sequence context length: a prompt plus its answer must fit here.
        self.n_ctx = int(n_ctx) if n_ctx and n_ctx > 0 else self.n_ctx_train
        self.n_seq = max(2, min(int(n_seq), 256))
        # The KV pool is shared by all branches: prompt + answer, the judge's prompt and the
        # candidates' tails live side by side, hence a multiple of the per-sequence length.
        pool = int(self.n_ctx * pool_factor) + 512
        self.n_batch = 512
        self.n_threads = n_threads or default_threads()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = pool
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.n_seq
        cparams.kv_unified = True
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.embeddings = False
        #: Hidden states of the decodes (the latent judge); the callback copies nothing until asked.
        self.n_layer = int(llama_cpp.llama_model_n_layer(self.model))
        self.n_embd = int(llama_cpp.llama_model_n_embd(self.model))
        self.hidden = HiddenCapture(self.n_embd, self.n_layer) if hidden else None
        if self.hidden is not None and self.hidden.available:
            cparams.cb_eval = self.hidden.callback
            cparams.cb_eval_user_data = None
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            detail = last_llama_error() or "out of memory?"
            self.close()
            raise EngineError(f"cannot create a context of {pool} tokens: {detail}")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.pool = int(llama_cpp.llama_n_ctx(self.ctx))
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.slots = SlotTable(self.n_seq, self)
        share = cache_bytes / (FULL_BYTES + EXACT_BYTES + TOP_BYTES)
        self._cache = LogitsCache(self.n_vocab, full_bytes=int(FULL_BYTES * share),
                                  exact_bytes=int(EXACT_BYTES * share), top_bytes=int(TOP_BYTES * share))
        self._embedder = Embedder(self)
        self.counters: dict[str, int] = {p: 0 for p in PHASES}
        self.decode_calls = 0
        self.decode_seconds = 0.0

        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.bos_token: int | None = bos if add_bos and bos >= 0 else None
        eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.eos_token: int | None = eos if eos >= 0 else None
        self._eog = np.array(
            [bool(llama_cpp.llama_vocab_is_eog(self.vocab, t)) for t in range(self.n_vocab)], dtype=bool
        )

    # ------------------------------------------------------------------ metadata / text

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    @property
    def chat_template(self) -> str | None:
        return self.metadata("tokenizer.chat_template")

    def token_text(self, token: int | None) -> str:
        return "" if token is None or token < 0 else self.detokenize([token])

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (self._ll.llama_token * n_max)()
        n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, special)
        if n < 0:
            n_max = -n
            buf = (self._ll.llama_token * n_max)()
            n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, special)
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for t in tokens:
            n = self._ll.llama_token_to_piece(self.vocab, int(t), buf, len(buf), 0, True)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = self._ll.llama_token_to_piece(self.vocab, int(t), big, len(big), 0, True)
                out += big.raw[:n]
            else:
                out += buf.raw[:n]
        return out.decode("utf-8", errors="replace")

    def prompt_tokens(self, prompt: str | Sequence[tuple[str, bool]]) -> list[int]:
        """Tokens of a formatted prompt, BOS added once if the model wants it.

        ``prompt`` is text (control tokens parsed everywhere) or ``(piece, markup)`` parts
        (``FormattedPrompt.parts``): control tokens are parsed in markup only, so a message's text
        that spells the template's markers stays text."""
        parts = [(prompt, True)] if isinstance(prompt, str) else list(prompt)
        tokens = tokenize_parts(self, parts)
        if self.bos_token is not None and (not tokens or tokens[0] != self.bos_token):
            tokens.insert(0, self.bos_token)
        return tokens

    def is_eog(self, token: int) -> bool:
        return bool(self._eog[token]) if 0 <= token < self.n_vocab else False

    # ------------------------------------------------------------------ branches

    def copy(self, src: int, dst: int, n: int) -> None:
        """``SeqMemory.copy`` for the slot table: share the first ``n`` KV positions of ``src``."""
        self._ll.llama_memory_seq_cp(self.mem, src, dst, 0, n)

    def remove(self, seq_id: int, start: int) -> bool:
        """``SeqMemory.remove`` for the slot table: drop the positions from ``start`` on."""
        return bool(self._ll.llama_memory_seq_rm(self.mem, seq_id, start, -1))

    def warm_prefix(self, tokens: Sequence[int], cache_file: Path, *, phase: str = "judge") -> bool:
        """Hold ``tokens`` in a branch: restored from ``cache_file`` (this sequence's llama.cpp state,
        saved by an earlier process) or decoded and saved there. Returns True when it was restored.

        Why: the judge's fixed prompt (about 400 tokens) is decoded before every process's first
        self-evaluation; a one-shot ``rainlocal run`` would pay it before its first word. The file name
        must identify the model file and the tokens (the caller's job); a file that does not load, or
        holds other tokens, is decoded over and rewritten."""
        key = [int(t) for t in tokens]
        if not key:
            return False
        if self.slots.holding(key) is not None:
            return False
        ll = self._ll
        path = Path(cache_file)
        if path.is_file():
            slot = self.slots.free_slot(set())
            self.slots.truncate(slot, 0)
            buf = (ll.llama_token * (len(key) + 1))()
            n_out = ctypes.c_size_t(0)
            read = ll.llama_state_seq_load_file(self.ctx, str(path).encode(), slot.seq_id, buf, len(key) + 1,
                                                ctypes.byref(n_out))
            if read and list(buf[: n_out.value]) == key:
                slot.tokens = list(key)
                self.slots.touch(slot)
                return True
            ll.llama_memory_seq_rm(self.mem, slot.seq_id, 0, -1)
            slot.tokens = []
        self.logprobs([key], phase=phase)
        slot = next((sl for sl in self.slots.slots if sl.tokens == key), None)
        if slot is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                arr = (ll.llama_token * len(key))(*key)
                if ll.llama_state_seq_save_file(self.ctx, str(tmp).encode(), slot.seq_id, arr, len(key)):
                    os.replace(tmp, path)
            except OSError:
                pass  # no cache: the next process decodes the prefix again
        return False

    def reset(self) -> None:
        """Forget every branch (e.g. between unrelated prompts)."""
        self.slots.clear()
        self._cache.clear()
        self._embedder.forget_path()
        if self.hidden is not None:
            self.hidden.forget()

    def trim(self, keep: Sequence[Sequence[int]]) -> None:
        """Cut every branch back to the longest of ``keep`` it starts with, dropping the others.

        Lets a caller hold fixed prefixes (the evaluation judge's per-conversation prompt parts) while
        forgetting what was decoded after them, so the next request extends a prefix and not a longer
        branch that happens to share its first tokens: llama.cpp's numbers depend (by up to ~0.3 in a
        log-prob) on where a decode was split."""
        self.slots.trim(keep)

    # ------------------------------------------------------------------ decoding

    #: Phases whose rows are read by a sampler over the whole vocabulary (rollouts at temperature 1,
    #: drafting with any ``--top-k``): a cached row that kept only its top tokens is decoded again.
    EXACT_PHASES = frozenset({"rollout", "draft"})

    def logprobs(self, seqs: Sequence[Sequence[int]], *, phase: str = "generate") -> list[np.ndarray]:
        if phase not in self.counters:
            raise ValueError(f"unknown phase {phase!r}")
        exact = phase in self.EXACT_PHASES
        results, todo = split_cached(seqs, self.n_ctx, lambda key: self._cache.get(key, exact=exact))
        if todo:
            keys = list(todo)
            # Requests that share a long prefix no cached branch holds (e.g. the judge's two option
            # orders) would each decode it; decode the shared part once first.
            self._decode_shared(keys, phase)
            # Bound how many distinct branches go into one decode (each needs its own slot).
            group = max(1, self.n_seq - 2)
            for start in range(0, len(keys), group):
                chunk = keys[start : start + group]
                for key, lp in zip(chunk, self._decode_group(chunk, phase)):
                    for i in todo[key]:
                        results[i] = lp
        return results  # type: ignore[return-value]

    def _decode_shared(self, keys: list[tuple[int, ...]], phase: str, *, logits: bool = True) -> None:
        """Decode the prefixes several requests share (and no branch holds) once, the longest-shared
        first by recursion: e.g. three judged texts share the judge's prompt, and each text's two option
        orders share the text; without the recursion each text's shared part would decode the prompt again."""
        shared = self._shared_prefixes(keys)
        if shared:
            self._decode_shared(shared, phase, logits=logits)
            shared = [k for k in shared if k not in self._cache]
            if shared:
                self._decode_group(shared, phase, logits=logits)

    def _shared_prefixes(self, keys: list[tuple[int, ...]], min_gain: int = 8) -> list[tuple[int, ...]]:
        if len(keys) < 2:
            return []
        arrs = [np.asarray(k, dtype=np.int64) for k in keys]
        out: dict[tuple[int, ...], None] = {}
        for i, a in enumerate(arrs):
            cached = self.slots.longest_cached(a)
            best = max(common_prefix(keys[j], a) for j in range(len(keys)) if j != i)
            if best - cached >= min_gain and best < len(keys[i]):
                out[keys[i][:best]] = None
        return [k for k in out if k not in self._cache]

    def _decode_group(self, keys: list[tuple[int, ...]], phase: str, *, logits: bool = True) -> list[np.ndarray]:
        busy: set[int] = set()
        plans: list[tuple[Slot, list[int], int]] = []
        for key in keys:
            seq = list(key)
            slot, keep = self.slots.assign(seq, busy)
            busy.add(slot.seq_id)
            plans.append((slot, seq[keep:], keep))
        # Tokens are sent in batches of at most n_batch; each sequence's last token asks for logits.
        entries: list[tuple[int, int, int, bool, int, int]] = []  # (token, pos, seq_id, want_logits, plan, prefix hash)
        capture = self.hidden is not None and self.hidden.active
        for pi, (slot, tail, keep) in enumerate(plans):
            hashes = prefix_hashes(keys[pi])[keep:] if capture else [0] * len(tail)
            for j, tok in enumerate(tail):
                entries.append((tok, keep + j, slot.seq_id, logits and j == len(tail) - 1, pi, hashes[j]))
        out: list[np.ndarray | None] = [None] * len(plans)
        try:
            for b0 in range(0, len(entries), self.n_batch):
                chunk = entries[b0 : b0 + self.n_batch]
                self._decode_chunk(chunk, out, busy)
        except BaseException:
            # Interrupted (Ctrl-C) or failed part way: the slots still name only the tokens they held before,
            # so drop any cells decoded after them; the table and the KV cache agree again.
            for slot, _tail, _keep in plans:
                self.remove(slot.seq_id, len(slot.tokens))
            raise
        for pi, (slot, tail, keep) in enumerate(plans):
            slot.tokens = list(keys[pi])
            if logits:
                self._cache.put(keys[pi], out[pi], exact=phase in self.EXACT_PHASES)  # type: ignore[arg-type]
            self.counters[phase] += len(tail)
        return out  # type: ignore[return-value]

    def _decode_chunk(self, chunk, out, busy: set[int]) -> None:
        ll = self._ll
        b = self._batch
        for i, (tok, pos, sid, want, _pi, _h) in enumerate(chunk):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = sid
            b.logits[i] = 1 if want else 0
        b.n_tokens = len(chunk)
        t0 = time.perf_counter()
        while True:
            with callback_interrupts() as caught:
                rc = ll.llama_decode(self.ctx, b)
            if caught:
                # a Ctrl-C that arrived while llama.cpp ran (see ``hidden.callback_interrupts``): the graph may
                # have stopped part way, so this decode's cells are dropped (``_decode_group``) and it is raised
                if self.hidden is not None:
                    self.hidden.take([])  # (drops what this decode copied)
                raise KeyboardInterrupt
            if rc == 0:
                break
            if rc == 1 and self.slots.evict_one(busy):
                continue  # no KV slot: drop an idle branch and retry
            if rc == 1:
                raise ContextOverflowError(
                    f"the KV cache ({self.pool} cells) is full; use a larger -c/--ctx-size"
                )
            if rc == 2:
                raise KeyboardInterrupt
            raise EngineError(f"llama_decode failed with code {rc}: {last_llama_error()}")
        self.decode_seconds += time.perf_counter() - t0
        self.decode_calls += 1
        if self.hidden is not None and self.hidden.active:
            self.hidden.take([e[5] for e in chunk])
        for i, (_tok, _pos, _sid, want, pi, _h) in enumerate(chunk):
            if not want:
                continue
            ptr = ll.llama_get_logits_ith(self.ctx, i)
            if not ptr:
                raise EngineError("llama.cpp returned no logits for a requested token")
            logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32)
            m = logits.max()
            lp = logits - m
            lp -= np.log(np.exp(lp).sum())
            out[pi] = lp

    # ------------------------------------------------------------------ hidden states

    @property
    def can_read_states(self) -> bool:
        """Whether ``hidden_states`` works here (llama.cpp's eval callback could be installed)."""
        return self.hidden is not None and self.hidden.available

    def want_layers(self, layers: Sequence[int]) -> None:
        """Capture these layers' outputs from every decode from now on."""
        if not self.can_read_states:
            raise EngineError("this engine cannot read hidden states")
        self.hidden.want(layers)

    def read_states(self, seqs: Sequence[Sequence[int]], *, phase: str = "judge") -> None:
        """Decode ``seqs`` for their hidden states alone, so that ``hidden_states`` finds their rows.

        Why: the latent evaluation judge and the fit read one layer part way up and need no next-token
        distribution; the layers above and the output head are most of a full decode's work, so the
        graph stops at the deepest wanted layer. Cells computed that way must never serve a later
        decode, so every slot written here is cut back to what it held before (a scratch span of the
        slot table); the rows read stay in the store, named by their prefixes. Requests that share a
        prefix (replies to one prompt) decode it once."""
        if not self.can_read_states or not self.hidden.layers:
            raise EngineError("no hidden-state layers are being captured (want_layers first)")
        keys = list(dict.fromkeys(tuple(int(t) for t in s) for s in seqs if len(s)))
        keys = [k for k in keys if any(r is None for r in self.hidden.rows(prefix_hashes(k)))]
        if not keys:
            return
        self.slots.begin_scratch()
        self.hidden.stop_early = True
        try:
            self._decode_shared(keys, phase, logits=False)
            group = max(1, self.n_seq - 2)
            for start in range(0, len(keys), group):
                self._decode_group(keys[start : start + group], phase, logits=False)
        finally:
            self.hidden.stop_early = False
            self.slots.end_scratch()

    def hidden_states(self, tokens: Sequence[int], start: int, *, phase: str = "judge") -> np.ndarray:
        """The wanted layers' states at ``tokens[start:]`` (``[n, n_layers_wanted, n_embd]``, float32).

        Rows come from the decodes that already ran (any branch that held the same prefix); a token never
        decoded since the layers were wanted (e.g. a rollout's last sampled token) is decoded now, as an
        extension of the cached branch, counted under ``phase``."""
        if not self.can_read_states or not self.hidden.layers:
            raise EngineError("no hidden-state layers are being captured (want_layers first)")
        key = [int(t) for t in tokens]
        hashes = prefix_hashes(key)
        rows = self.hidden.rows(hashes[start:])
        missing = [start + i for i, r in enumerate(rows) if r is None]
        if missing:
            first = missing[0]
            for slot in self.slots.slots:  # decode again from the first missing row
                if common_prefix(slot.tokens, key) > first:
                    self.slots.truncate(slot, first)
            self._decode_group([tuple(key)], phase)  # not through the logits cache: the rows are the point
            rows = self.hidden.rows(hashes[start:])
            if any(r is None for r in rows):
                raise EngineError("hidden states were not captured for a decoded sequence")
        return np.stack(rows).astype(np.float32)

    # ------------------------------------------------------------------ embeddings

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder.embed(texts)

    def embed_suffixes(self, tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray:
        return self._embedder.embed_suffixes(tokens, starts)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        ll = self._ll
        if getattr(self, "_embedder", None) is not None:
            self._embedder.close()
        if getattr(self, "ctx", None):
            ll.llama_batch_free(self._batch)
            ll.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            ll.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> "LlamaEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_hybrid(ll, model) -> bool:
    fn = getattr(ll, "llama_model_is_hybrid", None)
    try:
        return bool(fn(model)) if fn else False
    except Exception:  # pragma: no cover - older bindings
        return False
