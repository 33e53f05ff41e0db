"""Running an evaluation: answer every prompt with each system, judge each answer, append results.

Work is split into *units*, each one line of ``results.jsonl`` written (and fsynced) as soon as it
is done:

* ``{"kind": "check", "id": ...}``: one labelled case of the judge check (the judge's own agreement);
* ``{"kind": "self_check", "id": ...}``: the same case scored by the search's self-evaluation (the
  paper's "self-evaluation accuracy": how well the model that guides RAIN judges);
* ``{"kind": "answer", "id": ..., "system": "vanilla" | "rain" | "best-of-n"}``: one answer with its
  stats and every evaluation-judge verdict (prompts, raw output, verdict) and the refusal match.

A rerun reads the file first and skips every unit already there, so an interrupted evaluation loses
at most the unit in progress and never repeats finished work. The settings that decide the results
(model, seed, sampling, RAIN constants, judge, data file, ...) are kept in ``run.json``; a rerun with
different settings into the same directory is refused rather than mixing results.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from rainlocal.errors import UsageError
from rainlocal.evals.bestofn import best_of_n, fresh_start, run_answer, work_of
from rainlocal.evals.judges import SUITE_CRITERIA, CheckCase, EvalJudge
from rainlocal.evals.refusal import refusal_match
from rainlocal.evals.suites import Item
from rainlocal.generate import GenerationSettings, Generator

SYSTEMS = ("vanilla", "rain", "best-of-n")
RESULTS = "results.jsonl"
RUN_INFO = "run.json"
_CHECK_LABELS = {"check": "judge check", "self_check": "self-evaluation check"}


def unit_key(rec: dict[str, Any]) -> tuple[str, str, str]:
    return (str(rec.get("kind")), str(rec.get("id")), str(rec.get("system", "")))


def read_results(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Every complete record of ``path``; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        if line.strip():
            try:
                obj = json.loads(line)
            except ValueError:
                break
            if isinstance(obj, dict):
                records.append(obj)
        good += len(line)
    if repair and good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_run_info(output: Path, fingerprint: dict[str, Any]) -> None:
    """Write ``run.json`` on the first run; refuse a rerun whose settings differ."""
    path = output / RUN_INFO
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
        except (ValueError, OSError) as e:
            raise UsageError(f"{path} is unreadable ({e}); use another --output") from None
        a, b = _flatten(old), _flatten(fingerprint)
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:4]) + (" ..." if len(diff) > 4 else "")
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
    kind: str  # "check" or "answer"
    id: str
    system: str = ""
    item: Item | None = None
    case: CheckCase | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.id, self.system)


@dataclass
class EvalPlan:
    suite: str
    items: list[Item]
    systems: tuple[str, ...]
    checks: list[CheckCase] = field(default_factory=list)
    best_of: int | None = None  # None with "best-of-n" in systems: match RAIN's work
    best_of_max: int = 32
    system_prompt: str | None = None

    def units(self) -> list[Unit]:
        out = [Unit("check", c.id, "", case=c) for c in self.checks]
        out += [Unit("self_check", c.id, "", case=c) for c in self.checks]
        for it in self.items:
            out += [Unit("answer", it.id, s, item=it) for s in self.systems]
        return out


def messages_for(item: Item, system_prompt: str | None) -> list[dict[str, str]]:
    msgs = [dict(m) for m in item.messages]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


class Progress:
    """A progress bar with ETA on stderr (rich on a terminal, one plain line per unit otherwise)."""

    def __init__(self, total: int, done: int, console) -> None:
        self.total = total
        self.done = done
        self.console = console
        self.t0 = time.perf_counter()
        self.times: dict[str, list[float]] = {}
        self.remaining: list[str] = []
        self._bar = None
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[eta]}"), console=console, transient=False)
            self._task = self._bar.add_task("evaluating", total=total, completed=done, eta="ETA --")

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def eta(self) -> float | None:
        """Remaining seconds: each remaining unit at the mean time of finished units of its kind."""
        if not self.times:
            return None
        overall = [t for ts in self.times.values() for t in ts]
        mean_all = sum(overall) / len(overall)
        est = 0.0
        for kind in self.remaining:
            ts = self.times.get(kind)
            est += sum(ts) / len(ts) if ts else mean_all
        return est

    def start(self, label: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def finish(self, kind: str, seconds: float, label: str) -> None:
        self.done += 1
        self.times.setdefault(kind, []).append(seconds)
        if kind in self.remaining:
            self.remaining.remove(kind)
        eta = self.eta()
        eta_text = f"ETA {_fmt_s(eta)}" if eta is not None else "ETA --"
        if self._bar is not None:
            self._bar.update(self._task, advance=1, eta=eta_text)
        else:
            self.console.print(f"[{self.done}/{self.total}] {label} ({seconds:.1f} s) {eta_text}",
                               markup=False, highlight=False, soft_wrap=True)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Interrupted(Exception):
    """The user asked to stop; what was finished is saved."""


class EvalRunner:
    def __init__(self, plan: EvalPlan, output: Path, settings: GenerationSettings, *,
                 generator_factory: Callable[[], Generator], judge_factory: Callable[[], EvalJudge],
                 console, should_stop: Callable[[], bool] | None = None) -> None:
        self.plan = plan
        self.output = output
        self.settings = settings
        self.generator_factory = generator_factory
        self.judge_factory = judge_factory
        self.console = console
        self.should_stop = should_stop or (lambda: False)
        self.results_path = output / RESULTS
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
        """Do every unit not yet in results.jsonl; returns counts (total, skipped, done)."""
        existing = read_results(self.results_path)
        have = {unit_key(r) for r in existing}
        units = self.plan.units()
        todo = [u for u in units if u.key not in have]
        skipped = len(units) - len(todo)
        if skipped:
            if todo:
                self.console.print(f"resuming: {skipped} of {len(units)} results already in {self.results_path}; "
                                   f"{len(todo)} to do", markup=False, highlight=False, soft_wrap=True)
            else:
                self.console.print(f"nothing to do: all {len(units)} results already in {self.results_path}",
                                   markup=False, highlight=False, soft_wrap=True)
        if not todo:
            return {"total": len(units), "skipped": skipped, "done": 0}
        rain_work = {r["id"]: r.get("work") for r in existing
                     if r.get("kind") == "answer" and r.get("system") == "rain"}
        self.output.mkdir(parents=True, exist_ok=True)
        done = 0
        progress = Progress(len(units), skipped, self.console)
        progress.remaining = [u.system or u.kind for u in todo]
        with progress, open(self.results_path, "a", encoding="utf-8") as out:
            for u in todo:
                if self.should_stop():
                    raise Interrupted
                label = f"{u.id} {u.system or _CHECK_LABELS[u.kind]}".strip()
                progress.start(label)
                t0 = time.perf_counter()
                if u.kind == "check":
                    rec = self._check(u.case)  # type: ignore[arg-type]
                elif u.kind == "self_check":
                    rec = self._self_check(u.case)  # type: ignore[arg-type]
                else:
                    rec = self._answer(u.item, u.system, rain_work.get(u.id))  # type: ignore[arg-type]
                    if rec is None:
                        raise Interrupted
                    if u.system == "rain":
                        rain_work[u.id] = rec["work"]
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                done += 1
                progress.finish(u.system or u.kind, time.perf_counter() - t0, label)
        return {"total": len(units), "skipped": skipped, "done": done}

    # -- units -------------------------------------------------------------------------------

    def _check(self, case: CheckCase) -> dict[str, Any]:
        v = self.judge.judge(case.criterion, case.messages, case.answer, case.extra)
        return {"kind": "check", "id": case.id, "pair": case.pair, "criterion": case.criterion,
                "label": case.label, "answer": case.answer, "correct": None if v.good is None else v.good == case.label,
                "judgment": v.as_dict()}

    def _self_check(self, case: CheckCase) -> dict[str, Any]:
        """The case as the search's self-evaluation scores it (same judge model, objective and prompt
        as during RAIN), with both the paper's vote and the soft score."""
        from rainlocal.judge.self_eval import SelfEvaluator

        gen = self.generator
        ev = SelfEvaluator(gen.judge_engine, gen.objective(self.settings.objective), case.messages,
                           mode=self.settings.rain.score)
        r = ev.judge_probs(case.answer)
        return {"kind": "self_check", "id": case.id, "pair": case.pair, "objective": self.settings.objective,
                "label": case.label, "vote": r["vote"], "soft": round(r["soft"], 6),
                "orders": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in o.items()} for o in r["orders"]]}

    def _answer(self, item: Item, system: str, rain_work: int | None) -> dict[str, Any] | None:
        gen = self.generator
        messages = messages_for(item, self.plan.system_prompt)
        fresh_start(gen, self.settings)
        t0 = time.perf_counter()
        if system == "best-of-n":
            fixed = self.plan.best_of
            if fixed is None and rain_work is None:
                raise UsageError("best-of-n matched to RAIN's compute needs the RAIN answer first")
            done = best_of_n(gen, messages, self.settings, n=fixed,
                             match_work=None if fixed is not None else max(1, int(rain_work or 1)),
                             max_n=self.plan.best_of_max, should_stop=self.should_stop)
        else:
            done = run_answer(gen, messages, replace(self.settings, mode=system), self.should_stop)
        wall = time.perf_counter() - t0
        if done.stop_reason == "interrupted":
            return None
        stats = dict(done.stats)
        usage = stats.pop("usage", {})
        timings = stats.pop("timings", {})
        decoded = stats.get("tokens_decoded", {})
        judgments = {c: self.judge.judge(c, messages, done.text, item.extra).as_dict()
                     for c in SUITE_CRITERIA[self.plan.suite]}
        match = refusal_match(done.text)
        rec = {
            "kind": "answer", "id": item.id, "system": system,
            "prompt": item.user_text,
            "reply": done.text, "stop_reason": done.stop_reason,
            "answer_tokens": len(done.tokens),
            "wall_s": round(wall, 4),
            "work": work_of(decoded),
            "tokens_decoded": decoded,
            "usage": usage, "timings": timings,
            "stats": {k: v for k, v in stats.items() if k != "tokens_decoded"},
            "refusal": {"refused": match is not None, "match": match},
            "judgments": judgments,
        }
        if system == "best-of-n":
            rec["best_of"] = self.plan.best_of or "auto"
        return rec


def select_records(records: Iterable[dict[str, Any]], plan: EvalPlan) -> tuple[list[dict], list[dict]]:
    """The answer and check records (judge and self-evaluation checks) that belong to ``plan``
    (latest wins on duplicates)."""
    ids = {it.id for it in plan.items}
    check_ids = {c.id for c in plan.checks}
    answers: dict[tuple, dict] = {}
    checks: dict[tuple, dict] = {}
    for r in records:
        if r.get("kind") == "answer" and r.get("id") in ids and r.get("system") in plan.systems:
            answers[unit_key(r)] = r
        elif r.get("kind") in ("check", "self_check") and r.get("id") in check_ids:
            checks[unit_key(r)] = r
    order = {it.id: i for i, it in enumerate(plan.items)}
    ans = sorted(answers.values(), key=lambda r: (order[r["id"]], SYSTEMS.index(r["system"])))
    return ans, list(checks.values())


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
