"""RAIN: Rewindable Auto-regressive INference (Li et al., ICLR 2024), as the reference code runs it.

Equations and rules, one line each (names as in the paper; code in the module named):

* Eq. 1, selection (select.py): child = argmax ``qh + c * p * sqrt(parent.n) / (1 + child.n)``,
  ``qh = (q + 1) / 2`` if ``n > 0`` else 0; ``c = 2``.
* Backup (backup.py): on the path, ``n += 1``, ``fn += 1``, ``q += (s - q) / n``, ``e`` = mean embedding.
* Eq. 2, similarity (backup.py): sibling X of path node Y with ``sim >= 0.95``:
  ``q_X = (n_X q_X + gamma sim s) / (n_X + gamma sim)``, ``n_X += gamma sim``, ``gamma = 0.2``.
* Priors (expand.py): token-set joint probabilities, greedy clamped to ``[max p_s + min p_s, sum p_s]``,
  renormalised, and ``0.75 p + 0.25 / K`` at the root (again after each re-root).
* Budget (here): per step ``max(T - root.fn, min_searches)`` searches, ``T = 50``, ``min_searches = 15``.
* Early stop (select.py): the most-visited root child has ``fn > T_m`` and ``q > V`` (6 and 0.8).
* Commit (select.py): the most-visited root child (ties: higher q); it becomes the root, subtree kept.
  (The fast profile, ``commit = "value"``, takes the best-valued visited child instead; fast.py.)

One search (``RainSearch.search``): select down to a leaf (trying dynamic node addition at every node on
the way), roll out to the end of the phrase, self-evaluate ``answer so far + path + rollout`` (scores
cached by text), expand the leaf unless it is terminal (end-of-generation token in the path, a stop
string, or the length limit), back the score up (with embeddings when similarity updates or dynamic
addition need them).

A *rewind* is counted whenever a search's path does not pass through the leaf the previous search
ended on: the search went back up the tree and down another branch instead of extending the text it
had just judged (across a commit this includes the case where the previous leaf was discarded).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Protocol

import numpy as np

from rainlocal.engine.base import Engine, counter_delta
from rainlocal.search.backup import backup
from rainlocal.search.events import Candidate, Commit, Done, Step
from rainlocal.search.expand import dynamic_add, expand, mix_root_priors, should_add
from rainlocal.search.rollout import rollout
from rainlocal.search.select import chosen, early_stop, select_child
from rainlocal.search.settings import RainSettings, SamplingSettings, StopRule
from rainlocal.search.stopping import Stopper, finish
from rainlocal.search.tree import Node, path_tokens, reroot

TIME_PHASES = ("select", "expand", "rollout", "evaluate", "backup")


class Evaluator(Protocol):
    """Scores partial answers. An evaluator that reads the answering model's own states (the latent judge)
    also has ``score_tokens(answer_tokens)``, which the searches call with the tokens they decoded."""

    def score(self, answer_text: str) -> float:
        """Self-evaluation score s in [-1, 1] of the answer text so far (including the rollout)."""
        ...


def cached_score(cache: dict[str, float], evaluator: Evaluator, text: str,
                 tokens: list[int] | None = None) -> tuple[float, bool]:
    """The self-evaluation score of ``text`` from ``cache``, or from ``evaluator`` (then cached);
    returns (score, whether it was a cache hit). ``tokens`` (the answer's tokens, when ``text`` is all of
    them) go to an evaluator with ``score_tokens``."""
    score = cache.get(text)
    if score is not None:
        return score, True
    by_tokens = getattr(evaluator, "score_tokens", None)
    if tokens is not None and by_tokens is not None:
        score = cache[text] = float(by_tokens(tokens))
    else:
        score = cache[text] = float(evaluator.score(text))
    return score, False


def _cut_at_stop(text: str, stop: StopRule) -> tuple[str, bool]:
    cut = stop.find(text)
    if cut >= 0:
        return text[:cut], True
    return text, False


class RainSearch:
    """The state of one RAIN answer: the tree under the current root, the committed answer, the stats.

    ``rain_generate`` drives it; tests drive it step by step (``search``, ``budget``, ``commit``).
    """

    def __init__(
        self,
        engine: Engine,
        prompt: list[int],
        evaluator: Evaluator,
        settings: RainSettings,
        sampling: SamplingSettings,
        stop: StopRule,
        *,
        prefix: list[int] | None = None,
        rng: np.random.Generator | None = None,
        cache: dict[str, float] | None = None,
    ):
        """``prefix``: answer tokens already fixed before this search's root (the fast profile searches
        from a rewind point inside an answer); token-set depths count from the root. ``rng`` and
        ``cache`` (scores by judged text) may be shared with a caller that judges text itself."""
        self.engine = engine
        self.prompt = list(prompt)
        self.prefix = list(prefix or [])
        self.evaluator = evaluator
        self.settings = settings
        self.stop = stop
        self.rng = rng if rng is not None else np.random.default_rng(sampling.seed)
        own = StopRule(max_tokens=max(stop.max_tokens - len(self.prefix), 0), stop_strings=stop.stop_strings)
        self.stopper = Stopper(own, engine.detokenize, engine.is_eog)
        self.root = Node(depth=-1)
        self.cache: dict[str, float] = cache if cache is not None else {}
        self._emb_cache: dict[tuple[int, ...], dict[int, np.ndarray]] = {}  # tokens -> start -> embedding
        self.embeddings = 0
        self.searches = 0
        self.evaluations = 0
        self.cache_hits = 0
        self.commits = 0
        self.rewinds = 0
        self.early_stops = 0
        self.nodes_added = 0
        self.similarity_updates = 0
        self.times = {k: 0.0 for k in TIME_PHASES}
        self.interrupted = False
        self._prev_leaf: Node | None = None

    # ---- the committed answer -------------------------------------------------------------------
    @property
    def answer(self) -> list[int]:
        """The whole answer so far: the fixed prefix plus what this search committed."""
        if not self.prefix:
            return self.stopper.state.tokens
        return self.prefix + self.stopper.state.tokens

    def budget(self) -> int:
        """Searches allowed in the current step: ``max(T - root.fn, min_searches)`` (at least 1)."""
        s = self.settings
        return max(s.T - self.root.fn, s.min_searches, 1)

    # ---- one inner-loop search ------------------------------------------------------------------
    def search(self) -> Node:
        """Run one search from the root; returns the leaf it evaluated."""
        s = self.settings
        eng = self.engine
        answer = self.answer
        t0 = time.perf_counter()
        t_add = 0.0
        node = self.root
        path = [node]
        while node.children:
            if s.dynamic_add and should_add(node, s):
                ta = time.perf_counter()
                base_path = path_tokens(path)
                self.nodes_added += dynamic_add(
                    node, eng, self.prompt + answer + base_path, s, self.rng,
                    remaining=self.stop.max_tokens - len(answer) - len(base_path),
                )
                t_add += time.perf_counter() - ta
            node = select_child(node, s.c)
            path.append(node)
        leaf = node
        ptoks = path_tokens(path)
        eog_at = next((i for i, t in enumerate(ptoks) if eng.is_eog(t)), None)
        kept = ptoks if eog_at is None else ptoks[:eog_at]
        remaining = self.stop.max_tokens - len(answer) - len(ptoks)
        text, hit_stop = _cut_at_stop(eng.detokenize(answer + kept), self.stop)
        judged: list[int] | None = None if hit_stop else answer + kept
        terminal = eog_at is not None or hit_stop or remaining <= 0
        leaf.terminal = terminal
        t1 = time.perf_counter()
        self.times["select"] += t1 - t0 - t_add
        self.times["expand"] += t_add

        roll: list[int] = []
        if not terminal and s.rollout:
            roll = rollout(eng, self.prompt, answer + kept, s, self.stop, self.rng)
            text, cut = _cut_at_stop(eng.detokenize(answer + kept + roll), self.stop)
            judged = None if cut else answer + kept + roll
        t2 = time.perf_counter()
        self.times["rollout"] += t2 - t1

        score = self.judge(text, judged)
        t3 = time.perf_counter()
        self.times["evaluate"] += t3 - t2

        if not terminal:
            expand(leaf, eng, self.prompt + answer + ptoks, s, self.rng, remaining=remaining)
        t4 = time.perf_counter()
        self.times["expand"] += t4 - t3

        embeddings = None
        if (s.similarity or s.dynamic_add) and len(path) > 1:
            embeddings = self._embeddings(path, kept, roll)
        self.similarity_updates += backup(
            path, score, embeddings, similarity=s.similarity, gamma=s.gamma, threshold=s.sim_threshold
        )
        self.times["backup"] += time.perf_counter() - t4

        if self._prev_leaf is not None and not any(n is self._prev_leaf for n in path):
            self.rewinds += 1
        self._prev_leaf = leaf
        self.searches += 1
        return leaf

    def judge(self, text: str, tokens: list[int] | None = None) -> float:
        """Self-evaluation score of the answer text, cached by text (the cache may be shared)."""
        score, hit = cached_score(self.cache, self.evaluator, text, tokens)
        if hit:
            self.cache_hits += 1
        else:
            self.evaluations += 1
        return score

    def _embeddings(self, path: list[Node], kept: list[int], roll: list[int]) -> list[np.ndarray | None]:
        """Embedding, per non-root path node, of the text from that node's start through the rollout.

        These texts are suffixes of one token list, so the engine embeds them all in one pass."""
        tokens = kept + roll
        starts: list[int | None] = []
        offset = 0
        for node in path[1:]:
            start = min(offset, len(kept))
            starts.append(start if start < len(tokens) else None)
            offset += len(node.tokens)
        valid = [s for s in starts if s is not None]
        if not valid:
            return [None] * len(starts)
        key = tuple(tokens)
        if len(self._emb_cache) > 20000:
            self._emb_cache.clear()
        cached = self._emb_cache.get(key)
        missing = [s for s in dict.fromkeys(valid) if cached is None or s not in cached]
        if missing:
            # a judge that reads the model's own states embeds from them (nothing decoded); else the engine
            from_states = getattr(self.evaluator, "embed_suffixes", None)
            rows = from_states(self.prompt + self.answer, tokens, missing) if from_states is not None else None
            if rows is None:
                rows = self.engine.embed_suffixes(tokens, missing)
            cached = {**(cached or {}), **{s: np.asarray(r, dtype=np.float64) for s, r in zip(missing, rows)}}
            self._emb_cache[key] = cached
            self.embeddings += len(missing)
        return [cached[s] if s is not None else None for s in starts]

    # ---- the outer loop -------------------------------------------------------------------------
    def step(self, should_stop: Callable[[], bool] | None = None) -> Iterator[Step]:
        """One outer-loop step's searches (budget, early stop), a ``Step`` after each and one at the end
        (``committed=True``), ready for ``commit``. Sets ``interrupted`` (and yields no final Step) when
        ``should_stop()`` says so."""
        budget = self.budget()
        done = 0
        while done < budget:
            if should_stop is not None and should_stop():
                self.interrupted = True
                return
            self.search()
            done += 1
            yield self.step_event(done)
            if self.ready_to_commit():
                if done < budget:
                    self.early_stops += 1
                break
        yield self.step_event(done, committed=True)

    def ready_to_commit(self) -> bool:
        """The early-stop rule: most-visited root child with ``fn > T_m`` and ``q > V``."""
        return early_stop(self.root, self.settings.T_m, self.settings.V, self.settings.commit, self.settings.accept)

    def commit(self) -> tuple[Node, list[int], str] | None:
        """Commit the most-visited root child (``commit="value"``: the best valued) and re-root at it;
        returns (node, tokens kept, new text)."""
        child = chosen(self.root, self.settings.commit, self.settings.accept)
        if child is None:
            return None
        kept, new = self.stopper.add(child.tokens)
        self.commits += 1
        self.root = reroot(child)
        mix_root_priors(self.root, self.settings.root_uniform)
        return child, kept, new

    def node_text(self, node: Node) -> str:
        if node.text is None:
            node.text = self.engine.detokenize(list(node.tokens))
        return node.text

    def step_event(self, searches: int, *, committed: bool = False) -> Step:
        best = chosen(self.root, self.settings.commit, self.settings.accept)
        return Step(
            searches=searches,
            evaluations=self.evaluations,
            best_value=best.q if best is not None else 0.0,
            candidates=[Candidate(text=self.node_text(c), p=c.p, n=c.n, fn=c.fn, q=c.q) for c in self.root.children],
            committed=committed,
        )

    def stats(self, tokens_decoded: dict[str, int], wall: float) -> dict:
        return {
            "searches": self.searches,
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "commits": self.commits,
            "rewinds": self.rewinds,
            "early_stops": self.early_stops,
            "nodes_added": self.nodes_added,
            "similarity_updates": self.similarity_updates,
            "embeddings": self.embeddings,
            "answer_tokens": len(self.answer),
            "tokens_decoded": tokens_decoded,
            "time": {**{k: round(v, 6) for k, v in self.times.items()}, "wall": round(wall, 6)},
        }


def rain_generate(
    engine: Engine,
    prompt: list[int],
    evaluator: Evaluator,
    settings: RainSettings,
    sampling: SamplingSettings,
    stop: StopRule,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Commit | Step | Done]:
    """Answer ``prompt`` (full chat-formatted prompt tokens) by RAIN, yielding events as it goes.

    ``Step`` after every search and at each commit (``committed=True``), ``Commit`` with each committed
    token set (tokens kept by the stopping rule and the newly printable text), ``Done`` at the end.
    ``should_stop()`` is polled before every search; when it returns True the answer ends with
    ``stop_reason="interrupted"``, keeping what was committed.
    """
    t_start = time.perf_counter()
    start = dict(engine.counters)
    rs = RainSearch(engine, prompt, evaluator, settings, sampling, stop)
    stopper = rs.stopper
    reason: str | None = None
    while not stopper.done:
        yield from rs.step(should_stop)
        if rs.interrupted:
            reason = "interrupted"
            break
        result = rs.commit()
        if result is None:  # cannot happen: a non-terminal root always gets children
            reason = "eos"
            break
        _, kept, new = result
        if kept or new:
            yield Commit(tokens=list(kept), text=new)
    yield from finish(stopper, reason, rs.stats(counter_delta(engine, start), time.perf_counter() - t_start))
