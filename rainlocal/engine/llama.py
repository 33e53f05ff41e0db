"""The llama.cpp engine: one model, one unified-KV context holding many branches.

RAIN explores a tree of short continuations. Here every branch is a llama.cpp *sequence* in one
context with a unified KV cache: branches share their common prefix by metadata (``seq_cp``), a
rewind is a truncation (``seq_rm`` of a tail), and the tails of many branches are decoded together
in one ``llama_decode`` batch. Callers simply ask for the next-token distribution after whole token
sequences; the slot table below finds the cached sequence with the longest common prefix and
decodes only what is new. Nothing is re-decoded per candidate and no whole-context state is saved.

Recurrent and hybrid models cannot truncate a sequence; they are refused with a clear message.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rainlocal.engine.base import PHASES
from rainlocal.errors import ContextOverflowError, EngineError, ModelError

# Texts used once per model to centre raw pooled embeddings: raw cosine between unrelated texts is
# ~0.8 on small models, which makes a 0.95 similarity threshold meaningless without centring.
_CENTRING_TEXTS = (
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


@dataclass
class _Slot:
    """One llama.cpp sequence: the tokens it holds in the KV cache."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0


def _physical_cores() -> int:
    """Physical cores on Linux (llama.cpp runs fastest with one thread per physical core)."""
    try:
        pairs = set()
        core = phys = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip():
                    if core is not None:
                        pairs.add((phys, core))
                    core = phys = None
        if pairs:
            return max(1, min(len(pairs), os.cpu_count() or 1))
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)


_LOG_STATE: dict = {"verbose": False, "errors": [], "callback": None}


def _install_log_callback(verbose: bool) -> None:
    """Route llama.cpp logs through our callback: silent unless -v, errors kept for messages.

    llama-cpp-python 0.3.36 maps ggml log levels with an outdated table under verbose=False
    (warnings printed, errors swallowed), so we install our own and keep a reference to it.
    """
    import llama_cpp

    _LOG_STATE["verbose"] = verbose
    if _LOG_STATE["callback"] is not None:
        return

    @llama_cpp.llama_log_callback
    def _log(level, text, user_data):  # noqa: ANN001 - ctypes callback
        msg = text.decode("utf-8", errors="replace") if text else ""
        # ggml levels: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 cont
        if level == 4:
            _LOG_STATE["errors"].append(msg.strip())
            del _LOG_STATE["errors"][:-20]
        if _LOG_STATE["verbose"]:
            os.write(2, msg.encode("utf-8", errors="replace"))

    _LOG_STATE["callback"] = _log
    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))


def _last_llama_error() -> str:
    errs = [e for e in _LOG_STATE["errors"] if e]
    return errs[-1] if errs else ""


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
    ):
        import llama_cpp

        from rainlocal.gguf_info import validate_gguf

        self._ll = llama_cpp
        self.path = Path(model_path)
        validate_gguf(self.path)
        _install_log_callback(verbose)
        llama_cpp.llama_backend_init()
        _LOG_STATE["errors"].clear()

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 999
        self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            detail = _last_llama_error() or "llama.cpp could not load it"
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
        self.n_threads = n_threads or _physical_cores()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = pool
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.n_seq
        cparams.kv_unified = True
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.embeddings = False
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            detail = _last_llama_error() or "out of memory?"
            self.close()
            raise EngineError(f"cannot create a context of {pool} tokens: {detail}")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.pool = int(llama_cpp.llama_n_ctx(self.ctx))
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._slots = [_Slot(seq_id=i) for i in range(self.n_seq)]
        self._clock = 0
        self._logits_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._embed_ctx = None
        self._centre: np.ndarray | None = None
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

    def prompt_tokens(self, text: str) -> list[int]:
        """Tokens of a formatted prompt: control tokens parsed, BOS added once if the model wants it."""
        tokens = self.tokenize(text, special=True)
        if self.bos_token is not None and (not tokens or tokens[0] != self.bos_token):
            tokens.insert(0, self.bos_token)
        return tokens

    def is_eog(self, token: int) -> bool:
        return bool(self._eog[token]) if 0 <= token < self.n_vocab else False

    # ------------------------------------------------------------------ branches

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    @staticmethod
    def _lcp(a: list[int], b: np.ndarray) -> int:
        m = min(len(a), len(b))
        if m == 0:
            return 0
        neq = np.flatnonzero(np.asarray(a[:m]) != b[:m])
        return int(neq[0]) if len(neq) else m

    def _assign(self, seq: list[int], busy: set[int]) -> tuple[_Slot, int]:
        """Pick the slot for ``seq``: extend a cached branch, or fork one at the common prefix.

        Returns the slot and how many leading tokens of ``seq`` it already holds.
        """
        arr = np.asarray(seq, dtype=np.int64)
        best, best_lcp = None, -1
        for s in self._slots:
            if not s.tokens:
                continue
            lcp = self._lcp(s.tokens, arr)
            if lcp > best_lcp:
                best, best_lcp = s, lcp
        # At least the last token must be decoded to produce its logits.
        keep = min(max(best_lcp, 0), len(seq) - 1)
        if best is not None and best.seq_id not in busy and best_lcp == len(best.tokens) and keep == best_lcp:
            best.last_used = self._tick()
            return best, keep
        # Fork: copy the shared prefix into a free (or least recently used) slot.
        if best is not None:
            best.last_used = self._tick()  # a fork source is hot (e.g. the judge's fixed prefix)
        target = self._free_slot(busy | ({best.seq_id} if best is not None else set()))
        if target is None:
            # Only the source itself is available: truncate it in place (a rewind).
            if best is None or best.seq_id in busy:
                raise EngineError("too many concurrent branches for the context's sequence slots")
            target = best
            self._truncate(target, keep)
        else:
            self._truncate(target, 0)
            if best is not None and keep > 0:
                self._ll.llama_memory_seq_cp(self.mem, best.seq_id, target.seq_id, 0, keep)
                target.tokens = list(best.tokens[:keep])
        target.last_used = self._tick()
        return target, keep

    def _free_slot(self, exclude: set[int]) -> _Slot | None:
        candidates = [s for s in self._slots if s.seq_id not in exclude]
        if not candidates:
            return None
        empty = [s for s in candidates if not s.tokens]
        if empty:
            return empty[0]
        return min(candidates, key=lambda s: s.last_used)

    def _truncate(self, slot: _Slot, n: int) -> None:
        if n >= len(slot.tokens):
            return
        ok = self._ll.llama_memory_seq_rm(self.mem, slot.seq_id, n, -1)
        if not ok:
            raise EngineError("this model cannot rewind a branch (partial sequence removal refused)")
        del slot.tokens[n:]

    def _evict_one(self, busy: set[int]) -> bool:
        """Free KV cells by dropping the least recently used branch that no request needs now."""
        idle = [s for s in self._slots if s.tokens and s.seq_id not in busy]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_used)
        self._truncate(victim, 0)
        return True

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
        for sl in self._slots:
            if sl.tokens[: len(key)] == key:
                return False
        ll = self._ll
        path = Path(cache_file)
        if path.is_file():
            slot = self._free_slot(set())
            self._truncate(slot, 0)
            buf = (ll.llama_token * (len(key) + 1))()
            n_out = ctypes.c_size_t(0)
            read = ll.llama_state_seq_load_file(self.ctx, str(path).encode(), slot.seq_id, buf, len(key) + 1,
                                                ctypes.byref(n_out))
            if read and list(buf[: n_out.value]) == key:
                slot.tokens = list(key)
                slot.last_used = self._tick()
                return True
            ll.llama_memory_seq_rm(self.mem, slot.seq_id, 0, -1)
            slot.tokens = []
        self.logprobs([key], phase=phase)
        slot = next((sl for sl in self._slots if sl.tokens == key), None)
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
        for s in self._slots:
            self._truncate(s, 0)
        self._logits_cache.clear()

    # ------------------------------------------------------------------ decoding

    def logprobs(self, seqs: Sequence[Sequence[int]], *, phase: str = "generate") -> list[np.ndarray]:
        if phase not in self.counters:
            raise ValueError(f"unknown phase {phase!r}")
        results: list[np.ndarray | None] = [None] * len(seqs)
        todo: dict[tuple[int, ...], list[int]] = {}
        for i, seq in enumerate(seqs):
            key = tuple(int(t) for t in seq)
            if not key:
                raise ValueError("cannot compute logits of an empty sequence")
            if len(key) > self.n_ctx:
                raise ContextOverflowError(
                    f"sequence of {len(key)} tokens does not fit the context of {self.n_ctx} tokens"
                )
            cached = self._logits_cache.get(key)
            if cached is not None:
                results[i] = cached
            else:
                todo.setdefault(key, []).append(i)
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

    def _decode_shared(self, keys: list[tuple[int, ...]], phase: str) -> None:
        """Decode the prefixes several requests share (and no branch holds) once, the longest-shared
        first by recursion: e.g. three judged texts share the judge's prompt, and each text's two option
        orders share the text; without the recursion each text's shared part would decode the prompt again."""
        shared = self._shared_prefixes(keys)
        if shared:
            self._decode_shared(shared, phase)
            shared = [k for k in shared if k not in self._logits_cache]
            if shared:
                self._decode_group(shared, phase)

    def _shared_prefixes(self, keys: list[tuple[int, ...]], min_gain: int = 8) -> list[tuple[int, ...]]:
        if len(keys) < 2:
            return []
        arrs = [np.asarray(k, dtype=np.int64) for k in keys]
        out: dict[tuple[int, ...], None] = {}
        for i, a in enumerate(arrs):
            cached = max((self._lcp(sl.tokens, a) for sl in self._slots if sl.tokens), default=0)
            best = max(self._lcp(list(keys[j]), a) for j in range(len(keys)) if j != i)
            if best - cached >= min_gain and best < len(keys[i]):
                out[keys[i][:best]] = None
        return [k for k in out if k not in self._logits_cache]

    def _decode_group(self, keys: list[tuple[int, ...]], phase: str) -> list[np.ndarray]:
        busy: set[int] = set()
        plans: list[tuple[_Slot, list[int], int]] = []
        for key in keys:
            seq = list(key)
            slot, keep = self._assign(seq, busy)
            busy.add(slot.seq_id)
            plans.append((slot, seq[keep:], keep))
        # Tokens are sent in batches of at most n_batch; each sequence's last token asks for logits.
        entries: list[tuple[int, int, int, bool, int]] = []  # (token, pos, seq_id, want_logits, plan index)
        for pi, (slot, tail, keep) in enumerate(plans):
            for j, tok in enumerate(tail):
                entries.append((tok, keep + j, slot.seq_id, j == len(tail) - 1, pi))
        out: list[np.ndarray | None] = [None] * len(plans)
        for b0 in range(0, len(entries), self.n_batch):
            chunk = entries[b0 : b0 + self.n_batch]
            self._decode_chunk(chunk, out, busy)
        for pi, (slot, tail, keep) in enumerate(plans):
            slot.tokens = list(keys[pi])
            self._logits_cache[keys[pi]] = out[pi]  # type: ignore[assignment]
            self.counters[phase] += len(tail)
        if len(self._logits_cache) > 4096:
            # Drop the oldest half; dicts keep insertion order.
            for k in list(self._logits_cache)[:2048]:
                del self._logits_cache[k]
        return out  # type: ignore[return-value]

    def _decode_chunk(self, chunk, out, busy: set[int]) -> None:
        ll = self._ll
        b = self._batch
        for i, (tok, pos, sid, want, _pi) in enumerate(chunk):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = sid
            b.logits[i] = 1 if want else 0
        b.n_tokens = len(chunk)
        t0 = time.perf_counter()
        while True:
            rc = ll.llama_decode(self.ctx, b)
            if rc == 0:
                break
            if rc == 1 and self._evict_one(busy):
                continue  # no KV slot: drop an idle branch and retry
            if rc == 1:
                raise ContextOverflowError(
                    f"the KV cache ({self.pool} cells) is full; use a larger -c/--ctx-size"
                )
            if rc == 2:
                raise KeyboardInterrupt
            raise EngineError(f"llama_decode failed with code {rc}: {_last_llama_error()}")
        self.decode_seconds += time.perf_counter() - t0
        self.decode_calls += 1
        for i, (_tok, _pos, _sid, want, pi) in enumerate(chunk):
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

    # ------------------------------------------------------------------ embeddings

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled hidden states of each text from a second small context on the same weights,
        centred by the mean embedding of fixed texts and normalised to unit length."""
        if not texts:
            return np.zeros((0, self._n_embd_model()), dtype=np.float32)
        states = self._token_states([self._embed_tokens(t) for t in texts])
        return self._unit(np.stack([st.mean(axis=0) for st in states]))

    def embed_suffixes(self, tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray:
        """One embedding per start: the mean hidden state of ``tokens[start:]``, all from ONE pass.

        RAIN embeds, for every node on a search path, the text from that node's start through the
        rollout; those texts are suffixes of one another, so one decode serves them all (each
        suffix's states are read in the context of the path before it)."""
        toks = list(tokens)[-self._EMBED_MAX:]
        cut = len(tokens) - len(toks)
        if not toks:
            raise ValueError("embed_suffixes needs at least one token")
        states = self._token_states([toks])[0]
        sums = np.cumsum(states[::-1], axis=0)[::-1]
        rows = []
        for s in starts:
            i = min(max(int(s) - cut, 0), len(toks) - 1)
            rows.append(sums[i] / (len(toks) - i))
        return self._unit(np.stack(rows))

    _EMBED_MAX = 512  # tokens per embedded text (texts are a node's set plus a rollout: short)

    def _embed_tokens(self, text: str) -> list[int]:
        return self.tokenize(text or " ")[: self._EMBED_MAX] or [self.eos_token or 0]

    def _n_embd_model(self) -> int:
        return int(self._ll.llama_model_n_embd(self.model))

    def _unit(self, raw: np.ndarray) -> np.ndarray:
        """Centre by the mean embedding of fixed texts, then normalise rows to unit length."""
        if self._centre is None:
            states = self._token_states([self._embed_tokens(t) for t in _CENTRING_TEXTS])
            self._centre = np.stack([st.mean(axis=0) for st in states]).mean(axis=0)
        centred = raw - self._centre
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        return (centred / np.maximum(norms, 1e-9)).astype(np.float32)

    def _token_states(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """Per-token hidden states (before the output layer) of each token list, decoded on their own
        in a separate embedding context (never disturbing the branches of the main context)."""
        ll = self._ll
        cap = 2048
        if self._embed_ctx is None:
            cp = ll.llama_context_default_params()
            cp.n_ctx = cap
            cp.n_batch = cap
            cp.n_ubatch = cap
            cp.n_seq_max = 64
            cp.kv_unified = True
            cp.embeddings = True
            cp.pooling_type = ll.LLAMA_POOLING_TYPE_NONE
            cp.n_threads = self.n_threads
            cp.n_threads_batch = self.n_threads
            self._embed_ctx = ll.llama_init_from_model(self.model, cp)
            if not self._embed_ctx:
                raise EngineError("cannot create the embedding context")
            self._embed_batch = ll.llama_batch_init(cap, 0, 1)
            self._n_embd = self._n_embd_model()
        ctx, b = self._embed_ctx, self._embed_batch
        mem = ll.llama_get_memory(ctx)
        out: list[np.ndarray] = []
        i = 0
        while i < len(seqs):
            # Pack as many token lists as fit into one batch, one sequence each.
            ll.llama_memory_clear(mem, True)
            n = 0
            lengths: list[int] = []
            while i < len(seqs) and len(lengths) < 64 and n + len(seqs[i]) <= cap:
                for j, t in enumerate(seqs[i]):
                    b.token[n] = t
                    b.pos[n] = j
                    b.n_seq_id[n] = 1
                    b.seq_id[n][0] = len(lengths)
                    b.logits[n] = 1
                    n += 1
                self.counters["embed"] += len(seqs[i])
                lengths.append(len(seqs[i]))
                i += 1
            b.n_tokens = n
            t0 = time.perf_counter()
            rc = ll.llama_decode(ctx, b)
            self.decode_seconds += time.perf_counter() - t0
            self.decode_calls += 1
            if rc != 0:
                raise EngineError(f"embedding decode failed with code {rc}")
            ptr = ll.llama_get_embeddings(ctx)
            if not ptr:
                raise EngineError("llama.cpp returned no token embeddings")
            states = np.ctypeslib.as_array(ptr, shape=(n, self._n_embd)).astype(np.float32)
            offset = 0
            for length in lengths:
                out.append(states[offset : offset + length])
                offset += length
        return out

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        ll = self._ll
        if getattr(self, "_embed_ctx", None):
            ll.llama_batch_free(self._embed_batch)
            ll.llama_free(self._embed_ctx)
            self._embed_ctx = None
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
