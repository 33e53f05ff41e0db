"""Self-evaluation: the model (or a ``--judge`` model) scores a partial answer with a fixed prompt.

Prompt layout (raw text, built from an ``Objective``)::

    {instruction}

    Conversation:                        \\
    User: {example user}                  |
    Assistant: {example answer}           |  one block per worked example; the option order of
                                          |  each block is chosen so the correct letters
    {question}                            |  alternate A, B, A, B...
    (A) {good or bad option}              |
    (B) {the other option}                |
    The answer is: (A)                   /
                                          <- end of the FIXED PREFIX (same tokens for every call)
    Conversation:
    User: {user turn(s) of the chat}      <- HEAD: per evaluator (all non-system turns)
    Assistant: {answer so far}            <- ANSWER: per evaluation, re-tokenized by the judge

    {question}                            <- TAIL: one per option order, fixed per objective
    (A) {option}
    (B) {option}
    The answer is: (                      <- the next token is the letter that is read

For ``yesno`` objectives the option lines are absent and the tail ends in ``The answer is:``; the
next token is a yes/no word.

Why raw text and no chat template: the paper's judge is a plain completion prompt; ending the text
in ``The answer is: (`` pins the very next token to the option letter, which an assistant turn of a
chat template does not (the model would be free to start with "Sure," or a newline, spreading the
letter probability over later positions that we never read). Raw text is also independent of the
judge model's template, so the fixed prefix is the same text for every model, and the ``Engine``
protocol needs no chat-format knowledge. Instruct models handle this few-shot completion format
without trouble (see the SmolLM2 smoke test).

Token sequences are ``[BOS?] + prefix + head + answer + tail``, each piece tokenized on its own
and concatenated, so a piece boundary never changes earlier tokens. The prefix and tails are
tokenized once per engine and objective and shared by every ``SelfEvaluator`` on that engine; the
two option orders share every token up to the tail and are requested in one ``logprobs`` call,
so an engine with a prefix-reusing KV cache decodes the fixed prefix once and each answer once.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rainlocal.errors import JudgeError  # noqa: F401  (re-exported: rainlocal.judge.self_eval.JudgeError)
from rainlocal.judge.letters import option_logprobs, share as letter_share
from rainlocal.judge.objectives import Objective
from rainlocal.judge.prompt import (  # noqa: F401  (render_prompt, YESNO_CUE: re-exported)
    AB_CUE, CONV_LABEL, YESNO_CUE, render_head, render_prefix, render_prefix_single, render_prompt, render_tail,
    render_tail_single,
)
from rainlocal.judge.transcript import USER_LABEL  # noqa: F401  (re-exported)

MODES = ("vote", "soft", "first", "single")

#: When the judge context is too small, the head is cut from the front in steps of this many
#: tokens (coarse steps keep the head stable while the answer grows, preserving prefix reuse).
_CUT_STEP = 256
_SCORE_CACHE_MAX = 8192


def _letter_names(kind: str) -> tuple[str, ...]:
    """Option names per kind: "ab" (two options), "abc" (three: the eval's XSTest question), "yesno"."""
    return {"ab": ("A", "B"), "abc": ("A", "B", "C")}.get(kind, ("yes", "no"))


def _variants(name: str) -> list[str]:
    """Spellings of an option letter/word whose single-token forms all count for that option."""
    if len(name) == 1:
        forms = [name]
    else:
        forms = [name, name.capitalize(), name.upper()]
    out: list[str] = []
    for f in forms + [" " + f for f in forms]:
        if f not in out:
            out.append(f)
    return out


# ---------------------------------------------------------------------------------------------
# Per-engine shared state


@dataclass
class _EngineState:
    """What is computed once per engine: BOS, tokenizer quirks, letter ids, prefix and tail tokens."""

    bos: list[int]
    space_prefix: bool  # the tokenizer itself puts a space before a piece (SentencePiece style)
    letters: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)  # by kind
    prefixes: dict[Objective, list[int]] = field(default_factory=dict)
    tails: dict[Objective, list[list[int]]] = field(default_factory=dict)


_STATES: "weakref.WeakKeyDictionary[Any, _EngineState]" = weakref.WeakKeyDictionary()
_ATTR = "_rainlocal_judge_state"


def _model_name(engine: Any) -> str:
    for attr in ("name", "model_name", "alias", "model_path", "path"):
        value = getattr(engine, attr, None)
        if hasattr(value, "__fspath__"):
            return os.path.basename(os.fspath(value))
        if isinstance(value, str) and value:
            return value
    return type(engine).__name__


def _n_ctx(engine: Any) -> int | None:
    value = getattr(engine, "n_ctx", None)
    if callable(value):
        try:
            value = value()
        except Exception:
            return None
    return value if isinstance(value, int) and value > 0 else None


def _new_state(engine: Any) -> _EngineState:
    bos = getattr(engine, "bos_token", None)
    bos_list = [int(bos)] if isinstance(bos, (int, np.integer)) and not isinstance(bos, bool) and bos >= 0 else []
    # Does tokenizing "world" on its own give the same tokens as "world" after a space in context?
    # Then the tokenizer adds its own leading space and we must not add another.
    ctx = engine.tokenize("Hello")
    full = engine.tokenize("Hello world")
    alone = engine.tokenize("world")
    space_prefix = full[: len(ctx)] == ctx and full[len(ctx):] == alone
    return _EngineState(bos=bos_list, space_prefix=space_prefix)


def _state(engine: Any) -> _EngineState:
    """The shared judge state of ``engine`` (weakly keyed; an attribute for unhashable engines)."""
    try:
        st = _STATES.get(engine)
        if st is None:
            st = _STATES[engine] = _new_state(engine)
        return st
    except TypeError:  # not hashable or not weak-referenceable
        pass
    st = getattr(engine, _ATTR, None)
    if st is None:
        st = _new_state(engine)
        try:
            setattr(engine, _ATTR, st)
        except (AttributeError, TypeError):  # pragma: no cover - slots-only engines: no sharing
            pass
    return st


def _resolve_letters(engine: Any, kind: str) -> dict[str, tuple[int, ...]]:
    """Token ids whose probabilities count for each option, from the engine's own tokenizer."""
    cue = YESNO_CUE if kind == "yesno" else AB_CUE
    cue_tokens = engine.tokenize(cue)
    result: dict[str, tuple[int, ...]] = {}
    for name in _letter_names(kind):
        ids: list[int] = []
        for v in _variants(name):
            found = []
            toks = engine.tokenize(v)
            if len(toks) == 1:
                found.append(toks[0])
            # The form the model would produce right after the cue (matters for tokenizers that add
            # a space to a piece on its own, where the bare "A" after "(" is a different token).
            full = engine.tokenize(cue + v)
            if len(full) == len(cue_tokens) + 1 and full[: len(cue_tokens)] == cue_tokens:
                found.append(full[-1])
            for t in found:
                text = engine.detokenize([t]).strip()
                if text == v.strip() and int(t) not in ids:
                    ids.append(int(t))
        if not ids:
            forms = ", ".join(repr(v) for v in _variants(name))
            raise JudgeError(
                f"model {_model_name(engine)} cannot judge {kind!r} objectives: its tokenizer has no "
                f"single token for the option {name!r} (tried {forms}); choose another --judge model")
        result[name] = tuple(ids)
    names = _letter_names(kind)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if set(result[a]) & set(result[b]):
                raise JudgeError(f"model {_model_name(engine)}: options {a!r} and {b!r} share a token id")
    return result


def letter_ids(engine: Any, kind: str) -> dict[str, tuple[int, ...]]:
    st = _state(engine)
    if kind not in st.letters:
        st.letters[kind] = _resolve_letters(engine, kind)
    return st.letters[kind]


def prefix_tokens(engine: Any, objective: Objective, layout: str = "paper") -> list[int]:
    """The fixed prefix's tokens (BOS not included), tokenized once per engine, objective and layout
    (``paper``: question after the conversation; ``single``: ``render_prefix_single``)."""
    st = _state(engine)
    key = (objective, layout)
    toks = st.prefixes.get(key)
    if toks is None:
        text = render_prefix_single(objective) if layout == "single" else render_prefix(objective)
        toks = st.prefixes[key] = list(engine.tokenize(text))
    return toks


def tail_tokens(engine: Any, objective: Objective, layout: str = "paper") -> list[list[int]]:
    """Tail tokens per order: [good option first, bad option first] for ab; [single] for yesno and for
    the ``single`` layout."""
    st = _state(engine)
    key = (objective, layout)
    tails = st.tails.get(key)
    if tails is None:
        if layout == "single":
            tails = [list(engine.tokenize(render_tail_single(objective)))]
        else:
            orders = [True] if objective.kind == "yesno" else [True, False]
            tails = [list(engine.tokenize(render_tail(objective, g))) for g in orders]
        st.tails[key] = tails
    return tails


def layout_of(mode: str) -> str:
    """The prompt layout a score mode reads: ``single`` (question first) or ``paper``."""
    return "single" if mode == "single" else "paper"


def judge_prefix_sequence(engine: Any, objective: Objective, mode: str = "vote") -> list[int]:
    """The token sequence every evaluation on ``engine`` starts with: BOS (if any) and the fixed prefix."""
    return _state(engine).bos + prefix_tokens(engine, objective, layout_of(mode))


# ---------------------------------------------------------------------------------------------
# Scoring


class SelfEvaluator:
    """Scores (partial) answers in [-1, 1] with an objective's judge prompt on ``engine``.

    ``messages`` is the chat so far ({"role", "content"} dicts, last one the user turn); system
    messages are not shown to the judge. ``engine`` may be a different model from the one that
    writes the answer (``--judge``): the answer text is re-tokenized with the judge's tokenizer.

    ``mode="vote"`` (paper): each option order votes for the option whose letter is more likely;
    +1 when both orders pick the good option, -1 when both pick the bad one, 0 when they disagree.
    ``mode="soft"``: the mean over both orders of P(good letter) / (P(A) + P(B)), rescaled to
    [-1, 1]; order-debiased and keeps the signal a position-biased small judge loses in the vote.
    ``mode="first"``: the soft score of the good-option-first order alone, half the tail tokens. Why: on
    100 human-labelled replies to XSTest's unsafe prompts (refusals vs compliances, first 40 tokens) that
    order alone separated them better than both orders averaged (AUC qwen2.5-coder-0.5b 0.96 vs 0.89,
    SmolLM2-135M 0.72 vs 0.65); the bad-option-first order carried no signal (0.51, 0.42).
    yesno objectives use one order: vote +1 if P(yes) > P(no) else -1; soft 2 P(yes)/(P(yes)+P(no)) - 1.
    """

    def __init__(self, engine: Any, objective: Objective, messages: Sequence[dict[str, Any]], *,
                 mode: str = "vote"):
        if mode not in MODES:
            raise ValueError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.engine = engine
        self.objective = objective
        self.messages = [dict(m) for m in messages]
        self.mode = mode
        self._st = _state(engine)
        self.letter_ids = letter_ids(engine, objective.kind)
        self.layout = layout_of(mode)
        self._prefix = prefix_tokens(engine, objective, self.layout)
        self._tails = tail_tokens(engine, objective, self.layout)
        if mode == "first":
            self._tails = self._tails[:1]
        head_text = render_head(self.messages)
        self._head_label = list(engine.tokenize(CONV_LABEL))
        self._head = list(engine.tokenize(head_text))
        self._head_body: list[int] | None = None  # for context-limited cutting, computed on demand
        self._marker: list[int] = []
        self._head_cuts: dict[int, list[int]] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        self.n_ctx = _n_ctx(engine)
        #: Judge calls made (cache misses) and score-cache hits, for stats.
        self.calls = 0
        self.cache_hits = 0

    # -- token sequences -------------------------------------------------------------------

    def answer_tokens(self, answer_text: str) -> list[int]:
        text = answer_text.strip()
        if not text:
            return []
        return list(self.engine.tokenize(text if self._st.space_prefix else " " + text))

    def _fitted_head(self, fixed_len: int) -> list[int]:
        """The head, cut from the front in coarse steps if the whole sequence would overflow."""
        if self.n_ctx is None or fixed_len + len(self._head) <= self.n_ctx:
            return self._head
        if self._head_body is None:
            body = render_head(self.messages)[len(CONV_LABEL):]
            self._head_body = list(self.engine.tokenize(body))
            self._marker = list(self.engine.tokenize("[...]"))
        over = fixed_len + len(self._head_label) + len(self._marker) + len(self._head_body) - (self.n_ctx - 1)
        cut = max(0, -(-over // _CUT_STEP) * _CUT_STEP)
        if cut == 0 or cut >= len(self._head_body):  # cut 0: rounding; too big: even the answer alone does not fit: let the engine report it
            return self._head
        if cut not in self._head_cuts:
            self._head_cuts[cut] = self._head_label + self._marker + self._head_body[cut:]
        return self._head_cuts[cut]

    def sequences(self, answer_text: str) -> list[list[int]]:
        """The judge token sequences for ``answer_text``, one per option order (good first first)."""
        answer = self.answer_tokens(answer_text)
        fixed = len(self._st.bos) + len(self._prefix) + len(answer) + max(len(t) for t in self._tails)
        base = self._st.bos + self._prefix + self._fitted_head(fixed) + answer
        return [base + tail for tail in self._tails]

    # -- probabilities and scores ----------------------------------------------------------

    def judge_probs(self, answer_text: str) -> dict[str, Any]:
        """Raw letter probabilities per order plus both scores.

        ab: ``{"kind": "ab", "orders": [{"good": "A", "A": pA, "B": pB, "p_good": share}, {"good": "B", ...}],
        "vote": v, "soft": s, "score": <score in this evaluator's mode>}``;
        yesno: ``{"kind": "yesno", "orders": [{"good": "yes", "yes": py, "no": pn, "p_good": share}], ...}``.
        Probabilities are summed over every single-token spelling of the letter (see ``letter_ids``).
        """
        cached = self._cache.get(answer_text)
        if cached is not None:
            self.cache_hits += 1
            return cached
        return self.judge_many([answer_text])[0]

    def judge_many(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``judge_probs`` of several answers with ONE engine call (their shared prefix decoded once)."""
        found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            seqs = [self.sequences(t) for t in todo]
            rows = self.engine.logprobs([q for pair in seqs for q in pair], phase="judge")
            k = 0
            for t, pair in zip(todo, seqs):
                found[t] = self._store(t, rows[k:k + len(pair)])
                k += len(pair)
        return [found[t] for t in texts]

    def score_many(self, texts: Sequence[str]) -> list[float]:
        return [float(r["score"]) for r in self.judge_many(texts)]

    def _store(self, answer_text: str, rows: Sequence[np.ndarray]) -> dict[str, Any]:
        self.calls += 1
        good_name, bad_name = _letter_names(self.objective.kind)
        orders = []
        shares = []
        votes = []
        for i, row in enumerate(rows):
            lp = option_logprobs(row, self.letter_ids)
            if self.objective.kind == "ab" and self.layout == "single":
                g, b = "A", "B"  # the single layout lists the good option first
            elif self.objective.kind == "ab":
                g, b = ("A", "B") if i == 0 else ("B", "A")
            else:
                g, b = good_name, bad_name
            share = letter_share(lp[g], lp[b])
            shares.append(share)
            votes.append(1 if lp[g] > lp[b] else -1)
            entry = {"good": g}
            entry.update({name: math.exp(v) for name, v in lp.items()})
            entry["p_good"] = share
            orders.append(entry)
        vote = float(sum(votes)) / len(votes)
        soft = 2.0 * (sum(shares) / len(shares)) - 1.0
        result = {"kind": self.objective.kind, "orders": orders, "vote": vote, "soft": soft,
                  "score": vote if self.mode == "vote" else soft}  # "single": its one order's soft score
        if len(self._cache) >= _SCORE_CACHE_MAX:
            self._cache.pop(next(iter(self._cache)))
        self._cache[answer_text] = result
        return result

    def score(self, answer_text: str) -> float:
        """Self-evaluation score of the judged answer, in [-1, 1] (higher is better)."""
        return float(self.judge_probs(answer_text)["score"])

    def prompt_text(self, answer_text: str, good_first: bool = True) -> str:
        """The judge prompt as text (for -v logs)."""
        if self.layout == "single":
            answer = answer_text.strip()
            return (render_prefix_single(self.objective) + render_head(self.messages)
                    + (" " + answer if answer else "") + render_tail_single(self.objective))
        return render_prompt(self.objective, self.messages, answer_text, good_first)
