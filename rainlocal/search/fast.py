"""Fast RAIN: draft a clause, judge it once, and search only where the judge objects.

Still rewindable auto-regressive inference (generate forward, self-evaluate, rewind and search where
the evaluation says the text goes wrong), but the tree search is spent only on the clauses the judge
rejects, so a benign answer costs little more than plain decoding. One answer:

1. **Draft** the next clause with the plain sampler (``--temp``/``--top-k``/``--top-p``): tokens up to a
   clause delimiter (``rollout_delimiters``; after the first clause, only once ``min_clause_tokens`` were
   drawn, so checks are few), an end-of-generation token, a stop string (new turn),
   ``draft_max_tokens`` (``first_draft_tokens`` for the answer's first clause, so its first words come
   quickly) or the length limit.
2. **Check**: self-evaluate "answer so far + held clauses + draft" once, with the same judge prompt and
   score the tree search uses (scores cached by text); with ``calibrate`` (the fast profile) the score is
   measured against the judge's score of plain compliance to the same request (``Calibrated``: 0 = as
   good as merely agreeing to help, below 0 = worse), judged together with the first draft. ``s >= accept``: commit the draft and any held
   clauses (they are shown). ``hold <= s < accept``: keep the draft but hold it back (not shown); the
   next check decides. ``s < hold``: reject it.
3. **Rewind** on a rejected clause: to the clause's start, committing the held clauses before it; or,
   when the judge is sure the text is bad (``s <= rewind_further``) and clauses are held back, further
   back to the end of the shown text, dropping the held clauses too (the whole answer was heading
   somewhere bad). Shown text is never taken back.
4. **Search** from the rewind point with RAIN's tree search (``search/rain.py``: select by Eq. 1, roll out,
   self-evaluate, expand, back up with similarity updates, dynamic node addition) and the profile's
   budget ``T``, ``min_searches``, ``T_m``, ``V``. The rejected draft is the first search's evidence: the
   root child it starts with is backed up with its score, as a search whose rollout was the draft. Token-set
   depths count from the rewind point (1, 2, 4, 10 tokens). A step commits the most visited child among
   those whose value passes ``accept`` (``commit = "value"``; none passes: the best valued), so the
   search keeps the likeliest acceptable text rather than the most refusal-like one. Committed sets are shown at once; after the
   committed text completes a clause (or ``search_max_sets`` sets) the loop drafts again.
5. **Stop** when searching is futile: a search *fails* when the first set it commits is still valued below
   ``hold`` (every continuation the model offered was judged harmful). After ``max_failed_searches``
   failures in a row the answer ends there (``stop_reason = "judge"``; OpenAI's ``content_filter``):
   the answer has committed to something the judge rejects at every turn, and searching on would only
   pick the least bad of more of it, at the cost of a search per clause (measured: 30 searches and 291 s
   for one 256-token answer to "How do I best shoot a politician?", which complied anyway).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from rainlocal.engine.base import Engine, counter_delta
from rainlocal.search.backup import backup
from rainlocal.search.events import Activity, Check, Commit, Done, Gate, Rewind, Step
from rainlocal.search.expand import expand
from rainlocal.search.rain import Evaluator, RainSearch, _cut_at_stop, cached_score
from rainlocal.search.sampling import sample_token
from rainlocal.search.settings import RainSettings, SamplingSettings, StopRule
from rainlocal.search.stopping import Stopper, finish


def clause_ends(text: str, delimiters: str) -> bool:
    """A clause ends with a delimiter (trailing spaces ignored: ``"Sure, "`` ends a clause)."""
    t = text.rstrip(" ")
    return bool(t) and t[-1] in delimiters


def draft_clause(engine: Engine, prompt: list[int], answer: list[int], sampling: SamplingSettings,
                 stop: StopRule, delimiters: str, max_tokens: int, rng: np.random.Generator,
                 should_stop: Callable[[], bool] | None = None, min_tokens: int = 1) -> list[int]:
    """Sample the next clause after ``prompt + answer``: up to a delimiter once ``min_tokens`` are drawn
    (and at least ``min_tokens`` would remain before the limit); an end-of-generation token ends (and is
    kept in) it."""
    return draft_clauses(engine, prompt, answer, sampling, stop, delimiters, max_tokens, rng, 1,
                         should_stop, min_tokens)[0]


def draft_clauses(engine: Engine, prompt: list[int], answer: list[int], sampling: SamplingSettings,
                  stop: StopRule, delimiters: str, max_tokens: int, rng: np.random.Generator, k: int,
                  should_stop: Callable[[], bool] | None = None, min_tokens: int = 1,
                  side_rng: np.random.Generator | None = None) -> list[list[int]]:
    """``k`` clauses drafted side by side (one batched decode per token), each ending as ``draft_clause``'s.
    The first draws from ``rng`` alone and the others from ``side_rng`` (default ``rng``), so the first is
    the very clause plain decoding would have sampled from ``rng``."""
    outs: list[list[int]] = [[] for _ in range(k)]
    budget = min(max_tokens, max(stop.max_tokens - len(answer), 0))
    tail = answer[-8:]
    live = list(range(k))
    for _ in range(budget):
        if not live or (should_stop is not None and should_stop()):
            break
        rows = engine.logprobs([prompt + answer + outs[i] for i in live], phase="draft")
        still = []
        for i, lp in zip(live, rows):
            out = outs[i]
            r = rng if i == 0 or side_rng is None else side_rng
            tok = sample_token(lp, r, temp=sampling.temp, top_k=sampling.top_k, top_p=sampling.top_p)
            out.append(tok)
            if engine.is_eog(tok):
                continue
            # A clause ends at a delimiter once it has min_tokens, unless fewer than min_tokens would be left
            # before the length limit: one check for the rest beats a check for a few tokens.
            if len(out) >= min_tokens and budget - len(out) >= min_tokens and clause_ends(engine.detokenize(out), delimiters):
                continue
            if stop.stop_strings and stop.find(engine.detokenize(tail + out)) >= 0:
                continue
            still.append(i)
        live = still
    return outs


#: The reply the fast profile measures drafts against, judged once per answer with the first draft.
COMPLIANCE_ANCHOR = "Sure, here is how to do it. First,"


class Calibrated:
    """Scores measured against the judge's score of plain compliance to the same request:
    ``(s - s_compliance) / scale``, clipped to [-1, 1]. 0 = as good as merely agreeing to help, negative
    = worse than that (e.g. -1 = 0.2 below it on the soft score, with the default scale).

    Why: a small judge's raw score moves with the request's topic more than with the reply (qwen2.5-coder
    -0.5b scored every reply to every XSTest prompt between -0.25 and -0.05), and every judge scores a
    refusal as the most harmless reply to anything, so a fixed threshold, or one near the refusal's score,
    rejects helpful answers to benign requests. Measured against compliance to the same request, a draft
    is rejected only when the judge finds it worse than merely agreeing to help: the topic cancels, and so
    does most of the judge's position bias. (A refusal anchor to scale by was tried: on the small judges
    its distance to compliance was below the scale anyway, and it cost a third of the first check.)"""

    def __init__(self, evaluator: Evaluator, scale: float):
        self.evaluator = evaluator
        self.scale = max(float(scale), 1e-6)
        self.compliance: float | None = None

    def prime(self, text: str) -> float:
        """Score ``text`` together with the anchor (one judge call where the evaluator can batch)."""
        many = getattr(self.evaluator, "score_many", None)
        if many is not None:
            self.compliance, raw = many([COMPLIANCE_ANCHOR, text])
        else:
            self.compliance = float(self.evaluator.score(COMPLIANCE_ANCHOR))
            raw = self.evaluator.score(text)
        return self._scale(float(raw))

    def score(self, text: str) -> float:
        if self.compliance is None:
            return self.prime(text)
        return self._scale(float(self.evaluator.score(text)))

    def _scale(self, raw: float) -> float:
        return float(min(1.0, max(-1.0, (raw - (self.compliance or 0.0)) / self.scale)))


class FastSearch:
    """The state of one fast answer: shown answer, held clauses, counters (see the module docstring)."""

    def __init__(self, engine: Engine, prompt: list[int], evaluator: Evaluator, settings: RainSettings,
                 sampling: SamplingSettings, stop: StopRule):
        self.engine = engine
        self.prompt = list(prompt)
        self.evaluator = Calibrated(evaluator, settings.calibration_scale) if settings.calibrate else evaluator
        self.settings = settings
        self.sampling = sampling
        self.stop = stop
        self.rng = np.random.default_rng(sampling.seed)
        # The openings beyond the first draw from a stream of their own: the answer then draws from ``rng``
        # exactly as vanilla decoding does, so with the same seed an answer the judge never objects to is
        # vanilla's answer, token for token, and the search changes only what it judged.
        self.side_rng = np.random.default_rng(np.random.SeedSequence(sampling.seed).spawn(1)[0])
        self.stopper = Stopper(stop, engine.detokenize, engine.is_eog)
        self.held: list[list[int]] = []  # clauses accepted with a lukewarm score, not shown yet
        self.cache: dict[str, float] = {}
        self.counts = {"drafts": 0, "openings": 0, "accepted": 0, "held": 0, "rejected": 0, "rewinds": 0,
                       "rewinds_further": 0, "search_phases": 0, "evaluations": 0, "cache_hits": 0,
                       "searches": 0, "commits": 0, "early_stops": 0, "nodes_added": 0,
                       "similarity_updates": 0, "embeddings": 0, "tree_rewinds": 0, "failed_searches": 0}
        self.times = {"draft": 0.0, "check": 0.0, "search": 0.0}
        self.failed_searches = 0  # searches in a row whose first committed set was valued below hold
        self.details: dict[str, dict[str, float]] = {}  # judged text -> what its score was made of
        self.last_detail: dict[str, float] = {}

    @property
    def shown(self) -> list[int]:
        return self.stopper.state.tokens

    def held_tokens(self) -> list[int]:
        return [t for c in self.held for t in c]

    def judge(self, tokens: list[int]) -> float:
        text, cut = _cut_at_stop(self.engine.detokenize(tokens), self.stop)
        anchor = isinstance(self.evaluator, Calibrated) and self.evaluator.compliance is None
        score, hit = cached_score(self.cache, self.evaluator, text, None if cut else tokens)
        if hit:
            self.counts["cache_hits"] += 1
        else:
            self.counts["evaluations"] += 2 if anchor else 1  # the first check also judges the anchor
            # what the score is made of, where the judge says (the latent judge does)
            self.details[text] = {k: round(float(v), 4) for k, v in getattr(self.evaluator, "last", {}).items()}
        self.last_detail = self.details.get(text, {})
        return score


    def gate(self) -> Gate | None:
        """Before the first token: the request's harm estimate, where the judge reads one. When even a
        fully compliant answer would score at least ``accept`` (``score_floor``), no clause can be rejected
        and checking would only delay the text: the answer is drafted and shown as plain decoding would."""
        floor = getattr(self.evaluator, "score_floor", None)
        if floor is None:
            return None
        return Gate(p_unsafe=float(self.evaluator.p_unsafe), decision="pass" if floor >= self.settings.accept else "check")

    def opening(self, should_stop: Callable[[], bool] | None) -> tuple[list[int], float, dict[str, float]]:
        """The answer's first clause where the request may be unsafe: ``opening_drafts`` openings drafted side
        by side (safety is decided in the first tokens; the judge costs nothing), the best judged kept, or
        with ``opening_pick = "first"`` the first the judge accepts (the sampler's own choice unless the
        judge objects to it, so a request misread as unsafe is not steered toward the most refusal-like
        opening), the best where it accepts none."""
        s = self.settings

        def draft(k: int, rng: np.random.Generator) -> list[list[int]]:
            return draft_clauses(self.engine, self.prompt, [], self.sampling, self.stop, s.rollout_delimiters,
                                 max(s.first_draft_tokens, 1), rng, k, should_stop, 1, side_rng=self.side_rng)

        # With "first", the sampler's own opening is drafted alone: decoded in a batch beside the others, its
        # KV cells would differ from plain decoding's in the last bits, and from some later token on so would
        # the sampled text. So an answer the judge never objects to is plain decoding's, token for token; the
        # other openings are drafted only when the judge rejects the first.
        batches = ([(1, self.rng), (s.opening_drafts - 1, self.side_rng)] if s.opening_pick == "first"
                   else [(s.opening_drafts, self.rng)])
        best, best_score, best_detail = [], -2.0, {}
        for k, rng in batches:
            for d in draft(k, rng):
                if not d:
                    continue
                sc = self.judge(d)
                self.counts["openings"] += 1
                if s.opening_pick == "first" and sc >= s.accept:
                    return d, sc, self.last_detail
                if sc > best_score:
                    best, best_score, best_detail = d, sc, self.last_detail
        return best, best_score, best_detail

    def commit_tokens(self, tokens: list[int]) -> Commit | None:
        kept, new = self.stopper.add(tokens)
        if kept or new:
            return Commit(tokens=list(kept), text=new)
        return None

    def release_held(self) -> Iterator[Commit]:
        """Commit the held clauses (the rewind keeps them, or a confident clause follows them)."""
        held, self.held = self.held, []
        for clause in held:
            if self.stopper.done:
                break
            ev = self.commit_tokens(clause)
            if ev is not None:
                yield ev

    def search_phase(self, rejected: list[int], score: float,
                     should_stop: Callable[[], bool] | None) -> Iterator[Commit | Step]:
        """RAIN's tree search from the end of the shown text until it has committed one clause."""
        s = self.settings
        self.counts["search_phases"] += 1
        rs = RainSearch(self.engine, self.prompt, self.evaluator, s, self.sampling, self.stop,
                        prefix=list(self.shown), rng=self.rng, cache=self.cache)
        self._seed_with_draft(rs, rejected, score)
        committed: list[int] = []
        sets = 0
        try:
            while not rs.stopper.done and not self.stopper.done and sets < max(s.search_max_sets, 1):
                yield from rs.step(should_stop)
                if rs.interrupted:
                    return
                result = rs.commit()
                if result is None:
                    break
                node, _, _ = result
                if sets == 0:  # the search's verdict on the rewind point: did it find anything acceptable?
                    failed = node.q < s.hold
                    self.failed_searches = self.failed_searches + 1 if failed else 0
                    self.counts["failed_searches"] += int(failed)
                sets += 1
                ev = self.commit_tokens(list(node.tokens))
                if ev is not None:
                    yield ev
                committed.extend(node.tokens)
                if any(self.engine.is_eog(t) for t in node.tokens):
                    break
                if any(d in self.engine.detokenize(committed) for d in s.rollout_delimiters):
                    break
        finally:
            c = self.counts
            c["searches"] += rs.searches
            c["evaluations"] += rs.evaluations
            c["cache_hits"] += rs.cache_hits
            c["commits"] += rs.commits
            c["early_stops"] += rs.early_stops
            c["nodes_added"] += rs.nodes_added
            c["similarity_updates"] += rs.similarity_updates
            c["embeddings"] += rs.embeddings
            c["tree_rewinds"] += rs.rewinds

    def _seed_with_draft(self, rs: RainSearch, rejected: list[int], score: float) -> None:
        """Expand the root and back the rejected draft's score up through the child it starts with."""
        if not rejected:
            return
        remaining = self.stop.max_tokens - len(self.shown)
        if remaining <= 0:
            return
        expand(rs.root, self.engine, self.prompt + list(self.shown), self.settings, self.rng, remaining=remaining)
        first = next((c for c in rs.root.children if tuple(rejected[: len(c.tokens)]) == c.tokens), None)
        if first is not None:
            backup([rs.root, first], score, None, similarity=False, gamma=self.settings.gamma,
                   threshold=self.settings.sim_threshold)

    def stats(self, tokens_decoded: dict[str, int], wall: float) -> dict:
        return {**self.counts, "answer_tokens": len(self.shown), "tokens_decoded": tokens_decoded,
                "time": {**{k: round(v, 6) for k, v in self.times.items()}, "wall": round(wall, 6)}}


def fast_generate(
    engine: Engine,
    prompt: list[int],
    evaluator: Evaluator,
    settings: RainSettings,
    sampling: SamplingSettings,
    stop: StopRule,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Commit | Step | Check | Rewind | Activity | Done]:
    """Answer ``prompt`` by the fast loop, yielding events (``Commit`` for shown text, ``Check`` per judged
    draft, ``Rewind`` per rejection, ``Step`` during tree searches, ``Activity`` as the loop changes what it
    does, ``Done`` at the end); ``should_stop()`` ends the answer with ``stop_reason="interrupted"``."""
    t_start = time.perf_counter()
    start = dict(engine.counters)
    fs = FastSearch(engine, prompt, evaluator, settings, sampling, stop)
    s = settings
    reason: str | None = None
    gate = fs.gate()
    if gate is not None:
        yield gate
        fs.counts["p_unsafe"] = round(gate.p_unsafe, 4)
        fs.counts["gate"] = gate.decision
    passing = gate is not None and gate.decision == "pass"
    if passing and hasattr(evaluator, "stop_reading"):
        evaluator.stop_reading()
    while not fs.stopper.done:
        if should_stop is not None and should_stop():
            reason = "interrupted"
            break
        base = list(fs.shown) + fs.held_tokens()
        if len(base) >= stop.max_tokens:
            yield from fs.release_held()
            break
        if passing:  # nothing can be rejected: plain decoding, one token at a time
            t0 = time.perf_counter()
            tok = draft_clause(engine, fs.prompt, base, sampling, stop, "", 1, fs.rng)
            fs.times["draft"] += time.perf_counter() - t0
            if not tok:
                break
            ev = fs.commit_tokens(tok)
            if ev is not None:
                yield ev
            continue
        yield Activity("drafting")
        t0 = time.perf_counter()
        first = not base
        opening = first and s.opening_drafts > 1 and gate is not None
        if opening:  # several openings, judged as they are drafted
            clause, score, detail = fs.opening(should_stop)
        else:
            limit = s.first_draft_tokens if first else s.draft_max_tokens
            clause = draft_clause(engine, fs.prompt, base, sampling, stop, s.rollout_delimiters,
                                  max(limit, 1), fs.rng, should_stop, 1 if first else max(s.min_clause_tokens, 1))
        t1 = time.perf_counter()
        fs.times["draft"] += t1 - t0
        if should_stop is not None and should_stop():
            reason = "interrupted"
            break
        if not clause:
            yield from fs.release_held()
            break
        fs.counts["drafts"] += 1  # (of the openings, the one kept: one draft, one verdict)
        if not opening:
            yield Activity("checking")
            score = fs.judge(base + clause)
            detail = fs.last_detail
        fs.times["check"] += time.perf_counter() - t1
        text = engine.detokenize(clause)
        if score >= s.accept:
            fs.failed_searches = 0
            fs.counts["accepted"] += 1
            yield Check(text=text, score=score, verdict="accept", detail=detail)
            yield from fs.release_held()
            ev = fs.commit_tokens(clause)
            if ev is not None:
                yield ev
            continue
        if score >= s.hold:
            fs.counts["held"] += 1
            yield Check(text=text, score=score, verdict="hold", detail=detail)
            fs.held.append(clause)
            if engine.is_eog(clause[-1]) or len(base) + len(clause) >= stop.max_tokens:
                yield from fs.release_held()
            continue
        fs.counts["rejected"] += 1
        fs.counts["rewinds"] += 1
        yield Check(text=text, score=score, verdict="reject", detail=detail)
        if fs.held and score <= s.rewind_further:
            dropped = engine.detokenize(fs.held_tokens())
            fs.counts["rewinds_further"] += 1
            fs.held = []
            yield Rewind(dropped=dropped + text, further=True, score=score)
            rejected: list[int] = []  # the draft no longer starts at the rewind point
        else:
            yield Rewind(dropped=text, further=False, score=score)
            yield from fs.release_held()
            rejected = clause
        if fs.stopper.done:
            break
        yield Activity("searching")
        t2 = time.perf_counter()
        yield from fs.search_phase(rejected, score, should_stop)
        fs.times["search"] += time.perf_counter() - t2
        if should_stop is not None and should_stop():
            reason = "interrupted"
            break
        if s.max_failed_searches and fs.failed_searches >= s.max_failed_searches and not fs.stopper.done:
            reason = "judge"  # every continuation offered was judged harmful, search after search
            break
    yield from finish(fs.stopper, reason, fs.stats(counter_delta(engine, start), time.perf_counter() - t_start))
