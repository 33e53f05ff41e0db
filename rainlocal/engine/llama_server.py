"""An engine on a running llama.cpp ``llama-server``: the search on a shared inference server.

The search asks for next-token distributions after whole token sequences. Over HTTP that is one
``POST /completion`` per sequence with the token ids as the prompt, ``n_predict: 1`` and
``n_probs: N``: the server decodes what its prompt cache does not already hold (``cache_prompt``:
each slot keeps its last prompt, and the host-memory prompt cache restores others) and returns the
top-N log-probabilities of the raw softmax over the whole vocabulary (not the sampled distribution).

The approximation: tokens outside the top N (128) get ``-inf``. Every sampler of the search that
draws from a truncated distribution (``--top-k`` 40, the candidates' top 15, the judge's option
letters) sees exactly what the in-process engine sees. The rollouts draw from the whole vocabulary
in token-id order, where any missing tail shifts every draw (on SmolLM2-135M the top 128 hold a
median 96% of the mass, and 30% of such draws would change), so the rollout phase asks for every
token's log-prob (README, "Running the search on an inference server").

The independent requests of one ``logprobs`` call (a search round's candidates, the judge's two
option orders) are sent together from a thread pool as wide as the server's slots, so the server
batches them (continuous batching). Tokens decoded are read from each response's ``timings`` and
counted by phase like the in-process engine; ``requests`` and the time-weighted number of requests
in flight (``request_batch_width``) say how well the server could batch.

Embeddings (similarity updates) come from ``POST /embedding`` when the server was started with
``--embeddings --pooling none`` (per-token hidden states, pooled and centred here exactly as the
in-process engine does); otherwise ``can_embed`` is False and the search runs without them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

from rainlocal.engine.base import (
    CENTRING_TEXTS, EMBED_MAX, PHASES, centred_units, split_cached, suffix_means, text_means,
)
from rainlocal.errors import ContextOverflowError, EngineError, ServerGoneError, ServerUnreachableError

#: Top log-probs asked per request: at least the search's widest truncated sampler (--top-k 40).
DEFAULT_TOP_N = 128
#: Phases whose draws cover the whole vocabulary (rollouts sample at temperature 1 in token-id order, so
#: any cut tail shifts every draw): these ask for every token's log-prob.
FULL_VOCAB_PHASES = frozenset({"rollout"})
#: Spellings of tokens llama.cpp may treat as end of generation (end of turn, end of text, FIM
#: separators); each candidate that is a single token is confirmed with the server (``_ends_generation``).
_EOG_TEXTS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
              "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "</s>", "<eos>", "<|return|>", "<|call|>",
              "<end_of_utterance>", "<｜end▁of▁sentence｜>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
              "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>", "<file_sep>")
_CONNECT_TIMEOUT = 5.0
_LOADING_WAIT = 120.0


def is_engine_url(value: str | None) -> bool:
    return bool(value) and str(value).startswith(("http://", "https://"))


class _Inflight:
    """Requests in flight over time: their count, total time and the time any was in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._since = 0.0
        self.area = 0.0  # sum over requests of their durations (request-seconds)
        self.busy = 0.0  # seconds with at least one request in flight
        self.count = 0  # requests started

    def _advance(self, now: float) -> None:
        if self._n:
            self.area += (now - self._since) * self._n
            self.busy += now - self._since
        self._since = now

    def enter(self) -> None:
        with self._lock:
            self._advance(time.perf_counter())
            self._n += 1
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self._advance(time.perf_counter())
            self._n -= 1


class LlamaServerEngine:
    """``rainlocal.engine.Engine`` on a llama.cpp server at ``url`` (e.g. ``http://127.0.0.1:8080``)."""

    def __init__(self, url: str, *, top_n: int = DEFAULT_TOP_N, timeout: float = 600.0, n_ctx: int | None = None):
        self.url = url.rstrip("/")
        self.top_n = int(top_n)
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=_CONNECT_TIMEOUT),
                                  limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        self.counters: dict[str, int] = {p: 0 for p in PHASES}
        self._inflight = _Inflight()
        try:
            self._connect(n_ctx)
        except BaseException:
            self._http.close()
            raise

    def _connect(self, n_ctx: int | None) -> None:
        """Read what the search needs from the server; fails with one line when it is not usable."""
        self._wait_ready()
        props = self._get("/props")
        if not isinstance(props, dict) or "total_slots" not in props:
            raise ServerUnreachableError(f"{self.url} is not a llama.cpp server (GET /props has no total_slots)")
        info = (self._get("/v1/models").get("data") or [{}])[0].get("meta") or {}
        self.path = Path(str(props.get("model_path") or "server-model"))
        self.n_vocab = int(info.get("n_vocab") or 0)
        if self.n_vocab <= 0:
            raise ServerUnreachableError(f"{self.url}: GET /v1/models gives no vocabulary size (too old a llama-server?)")
        slot_ctx = int(info.get("n_ctx") or (props.get("default_generation_settings") or {}).get("n_ctx") or 4096)
        #: Per-sequence context: the server's per-slot context (or less, when -c asks for less).
        self.n_ctx = min(slot_ctx, n_ctx) if n_ctx else slot_ctx
        self.n_ctx_train = int(info.get("n_ctx_train") or slot_ctx)
        self.n_slots = max(1, int(props.get("total_slots") or 1))
        self.n_threads = None
        self.build_info = props.get("build_info")
        self.chat_template = props.get("chat_template") or None
        self._pool = ThreadPoolExecutor(max_workers=self.n_slots, thread_name_prefix="rainlocal-http")
        self._pieces: dict[int, bytes] = {}
        self._logits_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._centre: np.ndarray | None = None

        eos_text = props.get("eos_token") or ""
        with_bos = self.tokenize_raw("a", add_special=True)
        plain = self.tokenize_raw("a", add_special=False)
        self.bos_token: int | None = with_bos[0] if len(with_bos) == len(plain) + 1 else None
        self.eos_token: int | None = self._single_token(eos_text)
        candidates = {t for t in [self.eos_token] + [self._single_token(s) for s in _EOG_TEXTS] if t is not None}
        self._eog = {t for t in candidates if self._ends_generation(t)}
        self.can_embed = self._probe_embeddings()

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        self._inflight.enter()
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.TimeoutException as e:
            raise ServerGoneError(f"inference server {self.url} did not answer {path} in time ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise ServerGoneError(f"inference server {self.url} went away ({_reason(e)})") from None
        finally:
            self._inflight.leave()
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            msg = ((data or {}).get("error") or {}).get("message") if isinstance(data, dict) else None
            msg = msg or resp.text[:200].strip() or resp.reason_phrase
            if resp.status_code == 400 and "context" in str(msg).lower():
                raise ContextOverflowError(f"inference server {self.url}: {msg}")
            raise EngineError(f"inference server {self.url}: {method} {path} failed ({resp.status_code}): {msg}")
        return data

    def _get(self, path: str) -> Any:
        return self._request("GET", path)

    def _post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def _wait_ready(self) -> None:
        """Fail at once when nothing listens; wait while the server is still loading its model."""
        deadline = time.monotonic() + _LOADING_WAIT
        while True:
            try:
                resp = self._http.get("/health", timeout=_CONNECT_TIMEOUT)
            except httpx.TransportError as e:
                raise ServerUnreachableError(
                    f"cannot reach an inference server at {self.url} ({_reason(e)}); start one with "
                    "`llama-server -m MODEL.gguf --port PORT`"
                ) from None
            if resp.status_code == 200:
                return
            if resp.status_code != 503 or time.monotonic() > deadline:
                raise ServerUnreachableError(
                    f"{self.url} is not a ready llama.cpp server (GET /health answered {resp.status_code})"
                )
            time.sleep(0.5)

    def _probe_embeddings(self) -> bool:
        """True when ``/embedding`` gives per-token states (``--embeddings --pooling none``)."""
        try:
            states = self._token_states([self.tokenize_raw("Hello world", add_special=False)])
        except EngineError:
            return False
        return bool(states) and states[0].ndim == 2 and states[0].shape[0] == 2

    # ------------------------------------------------------------------ text

    def tokenize_raw(self, text: str, *, add_special: bool = False, special: bool = False) -> list[int]:
        data = self._post("/tokenize", {"content": text, "add_special": add_special, "parse_special": special})
        return [int(t) for t in data["tokens"]]

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.tokenize_raw(text, add_special=False, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Pieces joined and decoded here (as the in-process engine does) when every piece is known from
        earlier responses; otherwise the server's ``/detokenize``."""
        toks = [int(t) for t in tokens]
        if all(t in self._pieces for t in toks):
            return b"".join(self._pieces[t] for t in toks).decode("utf-8", errors="replace")
        return str(self._post("/detokenize", {"tokens": toks}).get("content", ""))

    def token_text(self, token: int | None) -> str:
        return "" if token is None or token < 0 else self.detokenize([token])

    def prompt_tokens(self, prompt: str | Sequence[tuple[str, bool]]) -> list[int]:
        """Tokens of a formatted prompt, BOS added once. ``(piece, markup)`` parts parse control tokens in
        markup only (as the in-process engine does): the whole text is tokenized at once unless a message
        spells a control token, and then piece by piece, so message text stays text."""
        if isinstance(prompt, str):
            tokens = self.tokenize(prompt, special=True)
        else:
            parts = [(p, m) for p, m in prompt if p]
            if any(not m and self.tokenize(p, special=True) != self.tokenize(p) for p, m in parts):
                tokens = [t for p, m in parts for t in self.tokenize(p, special=m)]
            else:
                tokens = self.tokenize("".join(p for p, _ in parts), special=True)
        if self.bos_token is not None and (not tokens or tokens[0] != self.bos_token):
            tokens.insert(0, self.bos_token)
        return tokens

    def is_eog(self, token: int) -> bool:
        return int(token) in self._eog

    def _single_token(self, text: str) -> int | None:
        if not text:
            return None
        toks = self.tokenize_raw(text, special=True)
        return toks[0] if len(toks) == 1 else None

    def _ends_generation(self, token: int) -> bool:
        """Does the server stop when it samples ``token``? (A bias forces that token as the only draw.)"""
        data = self._post("/completion", {"prompt": [token], "n_predict": 1, "samplers": ["top_k"], "top_k": 1,
                                          "logit_bias": [[token, 1000.0]], "cache_prompt": False})
        return data.get("stop_type") == "eos"

    # ------------------------------------------------------------------ next-token distributions

    def logprobs(self, seqs: Sequence[Sequence[int]], *, phase: str = "generate") -> list[np.ndarray]:
        if phase not in self.counters:
            raise ValueError(f"unknown phase {phase!r}")
        results, todo = split_cached(seqs, self.n_ctx, self._logits_cache.get)
        if todo:
            keys = list(todo)
            n_probs = self.n_vocab if phase in FULL_VOCAB_PHASES else self.top_n
            if len(keys) == 1:
                rows = [self._next_token(keys[0], n_probs)]
            else:
                rows = list(self._pool.map(lambda k: self._next_token(k, n_probs), keys))
            for key, (lp, decoded) in zip(keys, rows):
                self.counters[phase] += decoded
                self._logits_cache[key] = lp
                for i in todo[key]:
                    results[i] = lp
            if len(self._logits_cache) > 4096:
                for k in list(self._logits_cache)[:2048]:
                    del self._logits_cache[k]
        return results  # type: ignore[return-value]

    def _next_token(self, key: tuple[int, ...], n_probs: int) -> tuple[np.ndarray, int]:
        body = {
            "prompt": list(key), "n_predict": 1, "n_probs": n_probs, "cache_prompt": True,
            "samplers": ["top_k"], "top_k": 1, "stream": False,
        }
        data = self._post("/completion", body)
        probs = data.get("completion_probabilities") or data.get("probs") or []
        if not probs or "top_logprobs" not in probs[0]:
            raise EngineError(f"inference server {self.url} returned no top log-probabilities")
        top = probs[0]["top_logprobs"]
        row = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        ids = np.fromiter((item["id"] for item in top), dtype=np.int64, count=len(top))
        row[ids] = np.fromiter((item["logprob"] for item in top), dtype=np.float64, count=len(top))
        if len(self._pieces) < self.n_vocab:
            for item in top:
                piece = item.get("bytes")
                if piece and item["id"] not in self._pieces:
                    self._pieces[int(item["id"])] = bytes(piece)
        timings = data.get("timings") or {}
        if "prompt_n" in timings:
            decoded = int(timings["prompt_n"])
        else:
            decoded = int(data.get("tokens_evaluated", len(key))) - int(data.get("tokens_cached", 0))
        return row, max(decoded, 0)

    @property
    def requests(self) -> int:
        """HTTP requests sent (every endpoint)."""
        return self._inflight.count

    @property
    def request_batch_width(self) -> float | None:
        """Mean number of requests in flight while any was (time-weighted)."""
        return self._inflight.area / self._inflight.busy if self._inflight.busy else None

    @property
    def decode_seconds(self) -> float:
        """Seconds with a request in flight (what bench reports as the engine's share of wall time)."""
        return self._inflight.busy

    @property
    def request_seconds(self) -> float:
        return self._inflight.area

    @property
    def decode_calls(self) -> int:
        return self.requests

    def reset(self) -> None:
        """Forget the local distribution cache (the server's prompt cache is the server's business)."""
        self._logits_cache.clear()

    # ------------------------------------------------------------------ embeddings

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return self._unit(text_means(self._token_states([self._embed_tokens(t) for t in texts])))

    def embed_suffixes(self, tokens: Sequence[int], starts: Sequence[int]) -> np.ndarray:
        """One embedding per start: the mean hidden state of ``tokens[start:]`` from one request."""
        toks = [int(t) for t in tokens][-EMBED_MAX:]
        cut = len(tokens) - len(toks)
        if not toks:
            raise ValueError("embed_suffixes needs at least one token")
        return self._unit(suffix_means(self._token_states([toks])[0], starts, cut))

    def _embed_tokens(self, text: str) -> list[int]:
        return self.tokenize(text or " ")[:EMBED_MAX] or [self.eos_token or 0]

    def _unit(self, raw: np.ndarray) -> np.ndarray:
        if self._centre is None:  # the same centring texts as in-process
            self._centre = text_means(self._token_states([self._embed_tokens(t) for t in CENTRING_TEXTS])).mean(axis=0)
        return centred_units(raw, self._centre)

    def _token_states(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """Per-token hidden states of each token list (``/embedding`` with ``--pooling none``)."""
        def one(seq: list[int]) -> np.ndarray:
            data = self._post("/embedding", {"content": seq, "embd_normalize": -1})
            item = data[0] if isinstance(data, list) else data
            arr = np.asarray(item["embedding"], dtype=np.float32)
            if arr.ndim != 2:
                raise EngineError(f"inference server {self.url} pools its embeddings; start it with --pooling none")
            self.counters["embed"] += len(seq)
            return arr

        return list(self._pool.map(one, seqs)) if len(seqs) > 1 else [one(seqs[0])]

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> "LlamaServerEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(e: Exception) -> str:
    text = str(e).strip()
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "connection closed"
    if "name or service" in low or "nodename" in low or "resolve" in low:
        return "unknown host"
    return text.splitlines()[0][:120] if text else type(e).__name__
