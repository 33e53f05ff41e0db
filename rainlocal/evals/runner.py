"""Running an evaluation: answer every prompt with each strategy, judge each answer, append results.

Work is split into *units*, each one line of ``results.jsonl`` written (and fsynced) as soon as it
is done:

* ``{"kind": "check", "id": ...}``: one labelled case of the judge check (the judge's own agreement:
  written pairs, and replies labelled by people for harm and for refusal);
* ``{"kind": "self_check", "id": ...}``: a harm case scored by the search's self-evaluation (the
  paper's "self-evaluation accuracy": how well the model that guides RAIN judges);
* ``{"kind": "answer", "id": ..., "system": <strategy>, "sample": k}``: one answer with its stats, every
  evaluation-judge verdict (prompts, raw output, verdict), the refusal string rules and the
  repetition figures. With ``--samples N`` each prompt is answered N times by each strategy, sample k
  with seed + k (sample 0 is what a run without ``--samples`` answers, so a rerun with more samples
  adds to it).

A rerun reads the file first and skips every unit already there, so an interrupted evaluation loses
at most the unit in progress and never repeats finished work. With ``--jobs N`` each of N worker
processes does the units of every N-th *group* (a prompt with all its strategies, so best-of-N can
match that prompt's RAIN answer; or a check pair) and appends to the same file. The settings that
decide the results are kept in ``run.json``; a rerun with different settings is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from rainlocal.errors import Interrupted, UsageError
from rainlocal.evals.bestofn import fresh_start, work_of
from rainlocal.evals.checks import CheckCache, CheckCase
from rainlocal.evals.criteria import SUITE_CRITERIA, THREE_WAY_SUITES
from rainlocal.evals.judges import EvalJudge
from rainlocal.evals.progress import Progress
from rainlocal.evals.records import append_record, read_records, unit_key
from rainlocal.evals.refusal import classify_reply, refusal_match
from rainlocal.evals.strategies import Strategy, answer as strategy_answer
from rainlocal.evals.suites import Item
from rainlocal.evals.textstats import REP_N, heavy_repetition, rep_n
from rainlocal.generate import GenerationSettings, Generator

__all__ = ["EvalPlan", "EvalRunner", "Interrupted", "read_results", "select_records", "check_run_info"]

RESULTS = "results.jsonl"
RUN_INFO = "run.json"
_CHECK_LABELS = {"check": "judge check", "self_check": "self-evaluation check"}

#: The torn-line-safe reader, under its historical name.
read_results = read_records


def progress_kind(kind: str, system: str) -> str:
    """What a unit counts as in the progress line: its strategy, or its kind (a check, or a self-evaluation
    check, even one scored with a strategy's judge)."""
    return kind if kind == "self_check" else (system or kind)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_diff(old: dict[str, Any], new: dict[str, Any], *, skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """The settings that differ between a run's ``run.json`` and this command, as (key, old, new). A RAIN
    setting added since the run was made counts as its default there: a new setting's default keeps the
    behaviour it had before it existed (e.g. ``opening_drafts = 1``, one opening)."""
    from rainlocal.search.settings import RainSettings

    a, b = _flatten(old), _flatten(new)
    for k, v in _flatten({"rain": asdict(RainSettings())}).items():
        if k not in a and "rain" in old:
            a[k] = v
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k.split(".", 1)[0] not in skip]


def shown_diff(diffs: list[tuple[str, Any, Any]]) -> str:
    """``settings_diff``'s first differences, for a one-line refusal."""
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:4]) + (" ..." if len(diffs) > 4 else "")


def check_run_info(output: Path, fingerprint: dict[str, Any]) -> None:
    """Write ``run.json`` on the first run; refuse a rerun whose settings differ."""
    path = output / RUN_INFO
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
        except (ValueError, OSError) as e:
            raise UsageError(f"{path} is unreadable ({e}); use another --output") from None
        diffs = settings_diff(old, fingerprint)
        if diffs:
            shown = shown_diff(diffs)
            raise UsageError(
                f"{output} holds results made with other settings ({shown}); use another --output or delete it"
            )
        return
    output.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
                              indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Unit:
    kind: str  # "check", "self_check" or "answer"
    id: str
    group: str  # units of one group run in one process, in order
    system: str = ""
    item: Item | None = None
    case: CheckCase | None = None
    sample: int = 0  # answers: which of the plan's samples of this prompt (seed + sample)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.kind, self.id, self.system, self.sample)

    @property
    def progress_kind(self) -> str:
        return progress_kind(self.kind, self.system)


@dataclass
class EvalPlan:
    suite: str
    items: list[Item]
    strategies: dict[str, Strategy]
    checks: list[CheckCase] = field(default_factory=list)
    best_of: int | None = None  # None with a best-of-n strategy: match RAIN's work
    best_of_max: int = 32
    system_prompt: str | None = None
    #: Whose self-evaluation the check cases are scored by: a RAIN strategy's name (its judge: score,
    #: objective), "" the run's base settings (self-check and best-of-N), None no self-evaluation checks
    #: (no strategy judges itself).
    self_eval: str | None = ""
    #: Answers per prompt and strategy, sample k sampled with seed + k: one seed's sign test counts the
    #: prompts the search happened to change with that seed's sampled answers; several samples per
    #: prompt, compared prompt by prompt, measure the strategy rather than the seed.
    samples: int = 1

    def self_eval_settings(self, base: GenerationSettings) -> GenerationSettings:
        """The settings the self-evaluation checks score with (``base``: the run's own)."""
        return self.strategies[self.self_eval].settings if self.self_eval else base

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(self.strategies)

    def units(self) -> list[Unit]:
        out = [Unit("check", c.id, f"check:{c.pair or c.id}", case=c) for c in self.checks]
        if self.self_eval is not None:
            out += [Unit("self_check", c.id, f"check:{c.pair or c.id}", self.self_eval, case=c)
                    for c in self.checks if c.check != "refusal"]
        for it in self.items:  # a prompt's samples in one group: best-of-N matches its own sample's RAIN work
            out += [Unit("answer", it.id, f"item:{it.id}", s, item=it, sample=k)
                    for k in range(self.samples) for s in self.strategies]
        return out

    def units_of_worker(self, worker: int, workers: int) -> list[Unit]:
        """The units of every ``workers``-th group, starting at ``worker`` (groups in plan order)."""
        units = self.units()
        groups = list(dict.fromkeys(u.group for u in units))
        mine = {g for i, g in enumerate(groups) if i % workers == worker}
        return [u for u in units if u.group in mine]


def sampled(strategy: Strategy, sample: int) -> Strategy:
    """``strategy`` as it answers sample ``sample`` of a prompt: the same settings, seed + sample."""
    if not sample:
        return strategy
    st = strategy.settings
    return replace(strategy, settings=replace(st, sampling=replace(st.sampling, seed=st.sampling.seed + sample)))


def messages_for(item: Item, system_prompt: str | None) -> list[dict[str, str]]:
    msgs = [dict(m) for m in item.messages]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


class EvalRunner:
    def __init__(self, plan: EvalPlan, output: Path, settings: GenerationSettings, *,
                 generator_factory: Callable[[], Generator], judge_factory: Callable[[], EvalJudge],
                 console, should_stop: Callable[[], bool] | None = None,
                 judge_cache: CheckCache | None = None, self_eval_cache: CheckCache | None = None,
                 worker: tuple[int, int] = (0, 1), write_lock: Any = None, use_shipped: bool = True) -> None:
        self.plan = plan
        self.use_shipped = use_shipped  # False: every check case is read here (``eval --recheck``)
        # Several runners on one results file (an evaluation spread over servers) share this lock.
        self.write_lock = write_lock if write_lock is not None else contextlib.nullcontext()
        self.output = output
        self.settings = settings
        self.generator_factory = generator_factory
        self.judge_factory = judge_factory
        self.console = console
        self.should_stop = should_stop or (lambda: False)
        self.results_path = output / RESULTS
        self.judge_cache = judge_cache
        self.self_eval_cache = self_eval_cache
        self.worker = worker
        self._gen: Generator | None = None
        self._judge: EvalJudge | None = None

    @property
    def generator(self) -> Generator:
        if self._gen is None:
            self._gen = self.generator_factory()
        return self._gen

    @property
    def judge(self) -> EvalJudge:
        if self._judge is None:
            self._judge = self.judge_factory()
        return self._judge

    def run(self) -> dict[str, int]:
        """Do every unit (of this worker) not yet in results.jsonl; returns counts (total, skipped, done)."""
        with self.write_lock:
            existing = read_records(self.results_path)
        have = {unit_key(r) for r in existing}
        units = self.plan.units_of_worker(*self.worker)
        todo = [u for u in units if u.key not in have]
        skipped = len(units) - len(todo)
        if skipped:
            msg = (f"resuming: {skipped} of {len(units)} results already in {self.results_path}; {len(todo)} to do"
                   if todo else f"nothing to do: all {len(units)} results already in {self.results_path}")
            self.console.print(msg, markup=False, highlight=False, soft_wrap=True)
        if not todo:
            return {"total": len(units), "skipped": skipped, "done": 0}
        if self.use_shipped:
            self._from_shipped(todo)
        self._announce(todo)
        rain_work = {}
        for r in existing:
            if r.get("kind") == "answer" and r.get("system") in self.plan.strategies:
                rain_work[(r["id"], r["system"], int(r.get("sample") or 0))] = r.get("work")
        self.output.mkdir(parents=True, exist_ok=True)
        done = 0
        progress = Progress([u.progress_kind for u in units], [u.progress_kind for u in units if u.key in have],
                            self.console)
        with progress:
            for u in todo:
                if self.should_stop():
                    raise Interrupted("interrupted")
                label = (f"{u.id} {_CHECK_LABELS[u.kind]}" + (f" ({u.system})" if u.system else "") if u.kind != "answer"
                         else f"{u.id} {u.system}" + (f" sample {u.sample + 1} of {self.plan.samples}" if self.plan.samples > 1 else ""))
                progress.start(label)
                t0 = time.perf_counter()
                if u.kind == "check":
                    rec = self._cached(self.judge_cache, u.case, self._check)  # type: ignore[arg-type]
                elif u.kind == "self_check":
                    rec = self._cached(self.self_eval_cache, u.case, self._self_check)  # type: ignore[arg-type]
                    rec.pop("system", None)  # a cached score may have been made for another strategy of that judge
                    if u.system:
                        rec["system"] = u.system
                else:
                    rec = self._answer(u.item, u.system, self._matched_work(u.item.id, u.system, u.sample, rain_work),  # type: ignore[union-attr,arg-type]
                                       sample=u.sample)
                    if rec is None:
                        raise Interrupted("interrupted")
                    rain_work[(u.id, u.system, u.sample)] = rec["work"]
                rec["elapsed_s"] = round(time.perf_counter() - t0, 4)
                if self.worker[1] > 1:
                    rec["worker"] = self.worker[0]
                with self.write_lock:
                    append_record(self.results_path, rec)
                done += 1
                progress.finish(u.progress_kind, rec["elapsed_s"], label)
        return {"total": len(units), "skipped": skipped, "done": done}

    def _matched_work(self, item_id: str, name: str, sample: int, rain_work: dict) -> int | None:
        """The work of the last RAIN strategy listed before ``name`` on this prompt and sample (best-of-N auto)."""
        before = list(self.plan.strategies)[: list(self.plan.strategies).index(name)]
        for other in reversed(before):
            if self.plan.strategies[other].is_rain and (item_id, other, sample) in rain_work:
                return rain_work[(item_id, other, sample)]
        return None

    def _from_shipped(self, todo: list[Unit]) -> None:
        """Take check results shipped for this judge (``evals.shipped``) once a sample read here agrees
        with them; they go into the judge's cache, where the units below find them."""
        from rainlocal.evals.shipped import outcome_line, use_shipped

        for kind, cache, compute in (("check", self.judge_cache, self._check),
                                     ("self_check", self.self_eval_cache, self._self_check)):
            if cache is None or cache.portable is None:
                continue
            cases = list({u.case.id: u.case for u in todo if u.kind == kind and u.case is not None
                          and self._hit(cache, u.case) is None}.values())
            shipped = cache.shipped() if cases else {}
            if not shipped:
                continue

            def before(sample: list[CheckCase], kind: str = kind) -> None:
                self.console.print(f"{_CHECK_LABELS[kind]}: reading {len(sample)} cases here to compare with the "
                                   "results shipped for this model", markup=False, highlight=False, soft_wrap=True)
                expect = getattr(self.judge, "expect", None) if kind == "check" else None
                if expect is not None:
                    expect([(c.messages, c.answer) for c in sample])

            line = outcome_line(_CHECK_LABELS[kind], len(cases),
                                use_shipped(cases, shipped, compute, cache.put, before=before))
            if line:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _announce(self, todo: list[Unit]) -> None:
        """Tell a judge that reads states in batches (the latent judge) which check cases come next."""
        pending = [u.case for u in todo if u.kind == "check" and u.case is not None
                   and self._hit(self.judge_cache, u.case) is None]
        if pending:
            expect = getattr(self.judge, "expect", None)
            if expect is not None:
                expect([(c.messages, c.answer) for c in pending])

    @staticmethod
    def _hit(cache: CheckCache | None, case: CheckCase) -> dict[str, Any] | None:
        if cache is None:
            return None
        hit = cache.get(case.id)
        if hit is not None and hit.get("label") == case.label and hit.get("answer", case.answer) == case.answer:
            return hit
        return None

    @classmethod
    def _cached(cls, cache: CheckCache | None, case: CheckCase, compute) -> dict[str, Any]:
        """A check result from the judge's cache, or computed and stored there."""
        hit = cls._hit(cache, case)
        if hit is not None:
            return dict(hit, cached=True)
        rec = compute(case)
        if cache is not None:
            cache.put(rec)
        return rec

    # -- units -------------------------------------------------------------------------------

    def _check(self, case: CheckCase) -> dict[str, Any]:
        base = {"kind": "check", "id": case.id, "pair": case.pair, "check": case.check, "criterion": case.criterion,
                "label": case.label, "answer": case.answer, "human_label": case.extra.get("final_label")}
        if case.check == "refusal":
            c = self.judge.classify(case.messages, case.answer, prompt_id=case.prompt_id or None)
            refused = None if c.label is None else c.label != "full_compliance"
            return {**base, "predicted": refused, "correct": None if refused is None else refused == case.label,
                    "judgment": c.as_dict()}
        v = self.judge.judge(case.criterion, case.messages, case.answer, case.extra, prompt_id=case.prompt_id or None)
        return {**base, "predicted": v.good, "correct": None if v.good is None else v.good == case.label,
                "judgment": v.as_dict()}

    def _self_check(self, case: CheckCase) -> dict[str, Any]:
        """The case as the search's self-evaluation scores it (same judge model, objective and prompt
        as during RAIN), with both the paper's vote and the soft score."""
        gen = self.generator
        name = self.plan.self_eval or ""
        settings = self.plan.self_eval_settings(self.settings)
        ev = gen.text_evaluator(case.messages, settings)
        base = {"kind": "self_check", "id": case.id, "pair": case.pair, "check": case.check,
                "objective": settings.objective, "label": case.label, "answer": case.answer}
        if name:
            base["system"] = name
        if not hasattr(ev, "judge_probs"):  # the latent judge: one score, s = 1 - 2 P(unsafe) P(complies)
            ev.read_ahead([case.answer])
            s = float(ev.score(case.answer))
            return {**base, "score": "latent", "vote": 1.0 if s >= 0 else -1.0, "soft": round(s, 6),
                    "latent": dict(ev.last)}
        r = ev.judge_probs(case.answer)
        return {**base, "score": getattr(ev, "mode", settings.rain.score), "vote": r["vote"], "soft": round(r["soft"], 6),
                "orders": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in o.items()} for o in r["orders"]]}

    def _answer(self, item: Item, name: str, rain_work: int | None, sample: int = 0) -> dict[str, Any] | None:
        gen = self.generator
        strategy = sampled(self.plan.strategies[name], sample)
        messages = messages_for(item, self.plan.system_prompt)
        fresh_start(gen, strategy.settings)
        t0 = time.perf_counter()
        done = strategy_answer(gen, messages, strategy, best_of=self.plan.best_of, best_of_max=self.plan.best_of_max,
                               rain_work=rain_work, should_stop=self.should_stop)
        wall = time.perf_counter() - t0
        if done.stop_reason == "interrupted":
            return None
        stats = dict(done.stats)
        usage = stats.pop("usage", {})
        timings = stats.pop("timings", {})
        decoded = stats.get("tokens_decoded", {})
        # The judges see the conversation as the user sent it (without the system baseline's prompt).
        # The item's id goes with them: a judge fitted on labelled prompts grades it with what never saw it.
        judgments = {c: self.judge.judge(c, messages, done.text, item.extra, prompt_id=item.id).as_dict()
                     for c in SUITE_CRITERIA[self.plan.suite]}
        if self.plan.suite in THREE_WAY_SUITES:
            judgments["three_way"] = self.judge.classify(messages, done.text, prompt_id=item.id).as_dict()
        match = refusal_match(done.text)
        rec = {
            "kind": "answer", "id": item.id, "system": name, "strategy_kind": strategy.kind,
            "sample": sample, "seed": strategy.settings.sampling.seed,
            "prompt": item.user_text, "label": item.extra.get("label"), "type": item.extra.get("type"),
            "reply": done.text, "stop_reason": done.stop_reason,
            "answer_tokens": len(done.tokens),
            "wall_s": round(wall, 4),
            "work": work_of(decoded),
            "tokens_decoded": decoded,
            "usage": usage, "timings": timings,
            "stats": {k: v for k, v in stats.items() if k != "tokens_decoded"},
            "refusal": {"refused": match is not None, "match": match},
            "string_rule": classify_reply(done.text),
            "repetition": {f"rep_{REP_N}": round(rep_n(done.text, REP_N), 4), "heavy": heavy_repetition(done.text)},
            "judgments": judgments,
        }
        if strategy.kind == "best-of-n":
            rec["best_of"] = self.plan.best_of or "auto"
        if strategy.kind == "system":
            rec["safety_prompt"] = strategy.safety_prompt
        return rec


def select_records(records: Iterable[dict[str, Any]], plan: EvalPlan) -> tuple[list[dict], list[dict]]:
    """The answer and check records (judge and self-evaluation checks) that belong to ``plan``
    (latest wins on duplicates)."""
    ids = {it.id for it in plan.items}
    check_ids = {c.id for c in plan.checks}
    answers: dict[tuple, dict] = {}
    checks: dict[tuple, dict] = {}
    for r in records:
        if r.get("kind") == "answer" and r.get("id") in ids and r.get("system") in plan.strategies \
                and int(r.get("sample") or 0) < plan.samples:
            answers[unit_key(r)] = r
        elif r.get("kind") == "check" and r.get("id") in check_ids:
            checks[unit_key(r)] = r
        elif r.get("kind") == "self_check" and r.get("id") in check_ids and r.get("system", "") == plan.self_eval:
            checks[unit_key(r)] = r
    order = {it.id: i for i, it in enumerate(plan.items)}
    names = list(plan.strategies)
    ans = sorted(answers.values(), key=lambda r: (order[r["id"]], int(r.get("sample") or 0), names.index(r["system"])))
    return ans, list(checks.values())

