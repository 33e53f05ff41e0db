"""Evaluation judges: a local GGUF model or an OpenAI-compatible endpoint grading finished answers.

* ``LocalJudge`` - any GGUF model through ``LlamaEngine``: ``method="probs"`` reads the option
  letters' next-token probabilities after the judge's reply is started with "The answer is: ("
  (``rainlocal.judge.letters``, shared with the search's self-evaluation), or ``method="generate"``
  lets the model write a short greedy reply and parses the letter from it.
* ``HTTPJudge`` - an OpenAI-compatible chat-completions endpoint (``--judge-url``), for users with a
  stronger judge (the paper used GPT-4). The key is read from the environment variable named by
  ``--judge-api-key-env`` and sent as ``Authorization: Bearer ...``; stdlib urllib, no extra package.

Both answer two kinds of question (``rainlocal.evals.criteria``): a yes/no criterion, asked in both
option orders (``judge`` -> ``Verdict``), and XSTest's three-way compliance question, asked in its
three cyclic orders (``classify`` -> ``Classification``). Every verdict keeps the judge prompts, the
raw judge output and the parsed result, so a report can be audited.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rainlocal.errors import ContextOverflowError, EvalJudgeError, JudgeError, UsageError
from rainlocal.evals.criteria import (
    _MAX_CONV_CHARS, CLASSES, CRITERIA, CUE, LETTERS, SYSTEM_PROMPT, Criterion, build_prompt,
    build_three_way_prompt, three_way_orders,
)

__all__ = ["EvalJudge", "EvalJudgeError", "LocalJudge", "HTTPJudge", "Verdict", "Classification",
           "parse_letter", "make_judge"]


@dataclass
class Verdict:
    """A judged answer: ``good`` is True/False, or None when the judge's orders disagree or it is unreadable."""

    criterion: str
    good: bool | None
    p_good: float | None
    prompts: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # how it was reached (the latent judge: method, probes, fold)

    def as_dict(self) -> dict[str, Any]:
        out = {"verdict": self.good, "p_good": None if self.p_good is None else round(self.p_good, 6),
               "prompts": self.prompts, "raw": self.raw}
        return {**out, "info": self.info} if self.info else out


@dataclass
class Classification:
    """A three-way verdict: ``label`` is one of ``CLASSES`` (None when unreadable or tied); ``p`` the
    mean probability of each class over the three orders."""

    label: str | None
    p: dict[str, float] | None
    prompts: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"verdict": self.label, "p": None if self.p is None else {k: round(v, 6) for k, v in self.p.items()},
               "prompts": self.prompts, "raw": self.raw}
        return {**out, "info": self.info} if self.info else out


def parse_letter(text: str, letters: str = "AB") -> str | None:
    """The option letter a judge's reply picks ("(A)", "B", "The answer is: A", ...), else None."""
    t = (text or "").strip()
    if not t:
        return None
    cls = f"[{letters}]"
    patterns = (rf"\(\s*({cls})\s*\)", rf"^[\s\W]*({cls})\b",
                rf"\b(?:answer|option|choice|verdict)\b[^A-Za-z]{{0,12}}(?:is\s*)?[:\s]*\(?({cls})\b")
    for i, pat in enumerate(patterns):
        m = re.search(pat, t, re.I if i == 2 else 0)
        if m:
            return m.group(1).upper()
    return None


def _one_hot(letter: str | None, letters: Sequence[str]) -> dict[str, float] | None:
    return None if letter is None else {x: (1.0 if x == letter else 0.0) for x in letters}


#: (probabilities per letter or None when unreadable, raw output, the exact prompt used)
Answer = tuple["dict[str, float] | None", str, str]


class EvalJudge:
    """Base: ``judge`` (a two-option criterion) and ``classify`` (the three-way question), each over
    every option order; subclasses answer one prompt in ``_ask``."""

    #: One line naming the judge for reports and the run's settings.
    description: str = ""
    method: str = ""

    def judge(self, criterion: str | Criterion, messages: Sequence[dict[str, Any]], answer: str,
              extra: dict[str, Any] | None = None, *, prompt_id: str | None = None) -> Verdict:
        """``prompt_id``: the evaluated prompt's id (a judge fitted on labelled prompts grades each one
        with what never saw it: ``latent_judge``); a prompted judge ignores it."""
        crit = CRITERIA[criterion] if isinstance(criterion, str) else criterion
        self._prepare(messages, answer)
        prompts, raw, p_goods = [], [], []
        for good_first in (True, False):
            def builder(limit: int, reply: str = answer, good_first=good_first) -> str:
                return build_prompt(crit, messages, reply, extra, good_first=good_first, max_conv_chars=limit)

            probs, out, used = self._ask(builder, LETTERS[:2])
            prompts.append(used)
            raw.append(out)
            p_goods.append(None if probs is None else probs["A" if good_first else "B"])
        decided = [p for p in p_goods if p is not None]
        if not decided:
            return Verdict(crit.name, None, None, prompts, raw)
        p = sum(decided) / len(decided)
        return Verdict(crit.name, None if abs(p - 0.5) < 1e-12 else p > 0.5, p, prompts, raw)

    def classify(self, messages: Sequence[dict[str, Any]], answer: str, *,
                 prompt_id: str | None = None) -> Classification:
        """XSTest's three-way label of ``answer`` (mean class probability over the three orders)."""
        self._prepare(messages, answer)
        prompts, raw = [], []
        sums = {c: 0.0 for c in CLASSES}
        n = 0
        for order in three_way_orders():
            def builder(limit: int, reply: str = answer, order=order) -> str:
                return build_three_way_prompt(messages, reply, order, max_conv_chars=limit)

            probs, out, used = self._ask(builder, LETTERS)
            prompts.append(used)
            raw.append(out)
            if probs is not None:
                n += 1
                for letter, c in zip(LETTERS, order):
                    sums[c] += probs[letter]
        if not n:
            return Classification(None, None, prompts, raw)
        p = {c: v / n for c, v in sums.items()}
        best = max(p.values())
        winners = [c for c, v in p.items() if abs(v - best) < 1e-12]
        return Classification(winners[0] if len(winners) == 1 else None, p, prompts, raw)

    def _ask(self, builder: Callable[..., str], letters: Sequence[str]) -> Answer:
        """Answer one prompt; ``builder(limit, reply=...)`` writes it with the conversation cut to
        ``limit`` characters (and, given ``reply``, for another reply to the same conversation)."""
        raise NotImplementedError

    def _prepare(self, messages: Sequence[dict[str, Any]], answer: str) -> None:
        """Called before each question about ``answer``; a judge with state resets it here."""

    def identity(self) -> dict[str, Any]:
        return {"judge": self.description, "method": self.method}


class LocalJudge(EvalJudge):
    """A local GGUF model as the evaluation judge (letter probabilities or a generated verdict)."""

    def __init__(self, engine: Any, *, method: str = "probs", chat_format: str | None = None, max_new_tokens: int = 16):
        from rainlocal.generate import formatter_for

        if method not in ("probs", "generate"):
            raise UsageError(f"--judge-method must be probs or generate, got {method!r}")
        self.engine = engine
        self.method = method
        self.max_new_tokens = max_new_tokens
        self.formatter = formatter_for(engine, chat_format)
        name = getattr(getattr(engine, "path", None), "name", None) or type(engine).__name__
        self.description = f"local GGUF {name}"
        self._holds_prefixes = hasattr(engine, "trim")  # an inference server keeps its own prompt cache
        self._conversation: str | None = None
        self._reply: str | None = None
        self._prefixes: dict[tuple[int, ...], list[int]] = {}

    def _tokens(self, builder: Callable[..., str], with_cue: bool) -> tuple[list[int], str, int]:
        """Prompt tokens, the exact text the judge sees (chat-formatted, cue included) and the
        conversation's character limit, shortening the conversation until it fits the judge's context."""
        limit = _MAX_CONV_CHARS
        n_ctx = int(getattr(self.engine, "n_ctx", 4096))
        room = self.max_new_tokens + 2 if not with_cue else 2
        while True:
            toks, text = self._encode(builder(limit), with_cue)
            if len(toks) + room <= n_ctx:
                return toks, text, limit
            if limit < 200:
                raise ContextOverflowError(
                    f"the evaluation judge's prompt ({len(toks)} tokens) does not fit its context of {n_ctx} tokens")
            limit //= 2

    def _encode(self, content: str, with_cue: bool) -> tuple[list[int], str]:
        fp = self.formatter([{"role": "user", "content": content}])
        return self.engine.prompt_tokens(fp.parts + ([(CUE, False)] if with_cue else [])), fp.text + (CUE if with_cue else "")

    # Judging every reply to a conversation the same way, and cheaply. llama.cpp's log-probs depend on
    # how a prompt was decoded: where the decode was split (a continuation of fewer than 64 tokens goes
    # through other CPU kernels) and where its cells sit in the KV cache move a log-prob by up to ~0.4
    # (the option letters' probabilities by ~0.01). Left to the slot table, a reply judged after
    # another reply to the same conversation would extend whichever cached branch shares the most
    # tokens, e.g. the earlier reply's first words, and the strategies an evaluation compares would be
    # judged by different procedures. So every question is asked as the conversation's part of the
    # prompt (decoded once per conversation and held) followed by the rest, and after each reply the
    # branches are cut back to those parts: each reply's own tokens are decoded the same way, from the
    # same point. (Where cells sit still differs: measured differences between a reply judged first
    # and third were at most 0.009 in a probability, of both signs.) Only the reply and the question
    # are decoded for the second to last reply, about half the tokens of the first.

    def _prepare(self, messages, answer) -> None:
        if not self._holds_prefixes:
            return
        conversation = json.dumps(list(messages), sort_keys=True, ensure_ascii=False)
        if conversation != self._conversation:
            self.engine.reset()
            self._conversation, self._reply, self._prefixes = conversation, None, {}
        elif answer != self._reply:
            self.engine.trim(list(self._prefixes.values()))
        self._reply = answer

    def _prefix(self, builder: Callable[..., str], limit: int, with_cue: bool) -> list[int]:
        """The prompt's tokens that do not depend on the reply (common to two different replies)."""
        a, _ = self._encode(builder(limit, reply="x"), with_cue)
        b, _ = self._encode(builder(limit, reply="y"), with_cue)
        key = tuple(a)
        if key not in self._prefixes:
            from rainlocal.engine.llama.slots import common_prefix

            self._prefixes[key] = a[: common_prefix(a, b)]
        return self._prefixes[key]

    def _prompt(self, builder: Callable[..., str], with_cue: bool) -> tuple[list[int], str]:
        toks, used, limit = self._tokens(builder, with_cue)
        if self._holds_prefixes:
            from rainlocal.engine.llama.slots import common_prefix

            prefix = self._prefix(builder, limit, with_cue)
            n = common_prefix(prefix, toks)
            if 0 < n < len(toks):
                self.engine.logprobs([toks[:n]], phase="judge")
        return toks, used

    def letter_ids(self, letters: Sequence[str] = LETTERS[:2]) -> dict[str, tuple[int, ...]]:
        """Token ids of the option letters after "The answer is: (" (cached per engine)."""
        from rainlocal.judge.self_eval import letter_ids

        try:
            return letter_ids(self.engine, "ab" if len(letters) == 2 else "abc")
        except JudgeError as e:
            raise EvalJudgeError(f"evaluation judge: {e}") from None

    def _ask(self, builder, letters):
        import numpy as np

        from rainlocal.judge.letters import normalised, option_logprobs

        if self.method == "probs":
            toks, used = self._prompt(builder, with_cue=True)
            row = self.engine.logprobs([toks], phase="judge")[0]
            lps = option_logprobs(row, self.letter_ids(letters))
            raw = " ".join(f"P({k})={float(np.exp(v)):.6g}" for k, v in lps.items())
            return normalised(lps), raw, used
        toks, used = self._prompt(builder, with_cue=False)
        out: list[int] = []
        for _ in range(self.max_new_tokens):
            row = self.engine.logprobs([toks + out], phase="judge")[0]
            t = int(np.argmax(row))
            if self.engine.is_eog(t):
                break
            out.append(t)
            text = self.engine.detokenize(out)
            if parse_letter(text, "".join(letters)) is not None and not text.rstrip().endswith(("(", ":")):
                break
        text = self.engine.detokenize(out)
        return _one_hot(parse_letter(text, "".join(letters)), letters), text, used


class HTTPJudge(EvalJudge):
    """An OpenAI-compatible chat-completions endpoint as the evaluation judge (greedy, parsed letter)."""

    method = "generate"

    def __init__(self, url: str, *, model: str = "gpt-4", api_key_env: str | None = None,
                 timeout: float = 120.0, retries: int = 3, max_tokens: int = 16):
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--judge-url must be an http(s) URL, got {url!r}")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.api_key: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise UsageError(f"--judge-api-key-env: environment variable {api_key_env} is not set or empty")
            self.api_key = key
        self.timeout = timeout
        self.retries = retries
        self.max_tokens = max_tokens
        self.description = f"{model} at {self.url}"

    def identity(self) -> dict[str, Any]:
        return {"judge": self.description, "method": self.method, "model": self.model, "url": self.url}

    def complete(self, prompt: str) -> str:
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "rainlocal-eval"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = json.loads(resp.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace").strip()
                last = f"HTTP {e.code} from {self.url}: {detail or e.reason}"
                if e.code in (401, 403):
                    raise EvalJudgeError(f"evaluation judge: {last} (check --judge-api-key-env)") from None
                if e.code not in (408, 409, 429) and e.code < 500:
                    raise EvalJudgeError(f"evaluation judge: {last}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"cannot reach {self.url}: {getattr(e, 'reason', e)}"
            except (ValueError, UnicodeDecodeError) as e:
                raise EvalJudgeError(f"evaluation judge: {self.url} did not return JSON ({e})") from None
            if attempt < self.retries:
                time.sleep(min(30.0, 2.0 ** attempt))
        else:
            raise EvalJudgeError(f"evaluation judge: {last}")
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EvalJudgeError(f"evaluation judge: unexpected reply from {self.url}: {str(data)[:200]}") from None
        return content if isinstance(content, str) else json.dumps(content)

    def _ask(self, builder, letters):
        prompt = builder(_MAX_CONV_CHARS)
        text = self.complete(prompt)
        return _one_hot(parse_letter(text, "".join(letters)), letters), text, prompt


def make_judge(*, judge_url: str | None, judge_model: str | None, api_key_env: str | None, method: str,
               engine_loader, chat_format: str | None = None) -> EvalJudge:
    """The evaluation judge the options ask for; ``engine_loader(model_or_None)`` loads a local GGUF
    (None = the answering model's own engine)."""
    if judge_url:
        return HTTPJudge(judge_url, model=judge_model or "gpt-4", api_key_env=api_key_env)
    if api_key_env:
        raise UsageError("--judge-api-key-env needs --judge-url")
    return LocalJudge(engine_loader(judge_model), method=method, chat_format=chat_format)


