"""Grading the answers of an evaluation again with another evaluation judge (``eval --rejudge``).

Why: answers are the expensive part (the paper profile takes 15x vanilla's time) and do not depend on
the judge, while judges improve. A rerun with a new judge keeps every answer, its stats and the
judge-free rules, replaces each answer's verdicts, drops the old judge's check records (the run then
checks the new judge against people as usual) and records the new judge in ``run.json``. Every other
setting must be the run's own: answers made with other settings are never relabelled.

A criterion the new judge answers exactly as the old one did (the latent judge's prompted fallback,
``probs`` on the same model file, e.g. HH's helpfulness) can be kept instead of asked again. That is
checked, not assumed: the first ``SPOT`` answers are asked again, and the old verdicts are kept only
if every one of those agrees (same verdict, P(good) within ``SPOT_TOLERANCE``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from rainlocal.errors import Interrupted, UsageError
from rainlocal.evals.criteria import SUITE_CRITERIA, THREE_WAY_SUITES
from rainlocal.evals.records import read_records, unit_key

#: Fingerprint keys that name the evaluation judge (the ones a rejudge may change).
JUDGE_KEYS = ("judge", "judge_method", "judge_probes")
#: Answers whose kept criteria are asked again to check that the old verdicts are the new judge's.
SPOT = 8
#: The same prompted judge gives P(good) a little differently after another decode history (llama.cpp's
#: numbers depend on how earlier decodes were split: README "Evaluation results"; 0.015 measured on
#: SmolLM2-135M), so the spot check asks for the same verdicts and P(good) within this.
SPOT_TOLERANCE = 0.05


def switch_run_judge(output: Path, fingerprint: dict[str, Any], *, write: bool) -> dict[str, Any]:
    """Refuse when anything but the judge differs from ``output/run.json``'s settings; with ``write``,
    record the new judge there (after the rejudge, so that an interrupted one leaves the run as it was).
    Returns the old settings."""
    path = output / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--rejudge: no evaluation in {output} (no run.json)") from None
    except (ValueError, OSError) as e:
        raise UsageError(f"{path} is unreadable ({e}); use another --output") from None
    old = info.get("settings", {})
    from rainlocal.evals.runner import settings_diff, shown_diff

    diff = settings_diff(old, fingerprint, skip=JUDGE_KEYS)
    if diff:
        raise UsageError(f"--rejudge keeps the answers, so every setting but the judge must be the run's own "
                         f"({shown_diff(diff)})")
    if not write:
        return old
    info["settings"] = fingerprint
    info.setdefault("judges_before", []).append({k: old.get(k) for k in JUDGE_KEYS})
    info["rejudged"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return old


def keepable(old: dict[str, Any], judge: Any) -> set[str]:
    """Criteria whose old verdicts the new judge would give the same way: its prompted fallback is the
    old run's prompted judge (same method, same model file)."""
    fallback = getattr(judge, "fallback", None)
    if fallback is None or old.get("judge_method") != getattr(fallback, "method", None):
        return set()
    name = getattr(getattr(getattr(fallback, "engine", None), "path", None), "name", None)
    if not name or old.get("judge") != f"local GGUF {name}":
        return set()
    from rainlocal.evals.latent_judge import LATENT_CRITERIA

    return {c for crits in SUITE_CRITERIA.values() for c in crits if c not in LATENT_CRITERIA}


def rejudge(results: Path, suite: str, answers_of: Callable[[list[dict]], list[dict]], judge: Any,
            case_of: Callable[[dict], tuple[list[dict], dict]], *, keep: set[str], console,
            should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Replace the verdicts of the answers ``answers_of`` picks from ``results`` (in place, atomically at
    the end; an interrupted rejudge changes nothing). ``case_of(record)``: the conversation the judge sees
    and the item's extra fields (reference answers), as when it was answered. Returns what was done."""
    records = read_records(results, repair=False)
    answers = answers_of(records)
    mine = {id(r) for r in answers}
    keys = {unit_key(r) for r in answers}  # (an older duplicate of one of them is never read)
    others = sorted({f"{r.get('system')} {r.get('id')}" + (f" sample {r['sample']}" if r.get("sample") else "")
                     for r in records if r.get("kind") == "answer" and id(r) not in mine and unit_key(r) not in keys})[:4]
    if others:  # they would keep the old judge's verdicts in a run that says it has the new one
        raise UsageError(f"--rejudge grades every answer in {results.parent}, and some are not in this command's "
                         f"strategies, prompts and samples (e.g. {', '.join(others)}): give the run's --strategies, "
                         "--limit and --samples")
    expect = getattr(judge, "expect", None)
    if expect is not None:
        expect([(case_of(r)[0], r["reply"]) for r in answers])
    criteria = SUITE_CRITERIA[suite]
    kept = set(keep) & set(criteria)
    if kept:
        kept = _spot_check(answers[:SPOT], kept, judge, case_of, console)
    t0 = time.perf_counter()
    for n, r in enumerate(answers, 1):
        if should_stop():
            raise Interrupted("interrupted")
        msgs, extra = case_of(r)
        old = r.get("judgments", {})
        new = {c: (old[c] if c in kept and c in old else
                   judge.judge(c, msgs, r["reply"], extra, prompt_id=r["id"]).as_dict())
               for c in criteria}
        if suite in THREE_WAY_SUITES:
            new["three_way"] = judge.classify(msgs, r["reply"], prompt_id=r["id"]).as_dict()
        r["judgments"] = new
        if n % 50 == 0 or n == len(answers):
            console.print(f"rejudged {n}/{len(answers)} answers ({time.perf_counter() - t0:.0f} s)",
                          markup=False, highlight=False)
    # The old judge's checks go (the new one is checked as usual); the self-evaluation's stay.
    out = [r for r in records if r.get("kind") != "check"]
    tmp = results.with_suffix(".rejudge.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, results)
    return {"answers": len(answers), "kept": sorted(kept), "dropped_checks": len(records) - len(out)}


def _spot_check(sample: Sequence[dict], kept: set[str], judge: Any, case_of, console) -> set[str]:
    """The criteria of ``kept`` whose old verdicts the judge reproduces on ``sample``."""
    ok = set(kept)
    worst: dict[str, float] = {}
    for r in sample:
        for c in sorted(ok):
            old = (r.get("judgments") or {}).get(c)
            if old is None:
                ok.discard(c)
                continue
            msgs, extra = case_of(r)
            v = judge.judge(c, msgs, r["reply"], extra, prompt_id=r["id"]).as_dict()
            gap = abs((v.get("p_good") or 0) - (old.get("p_good") or 0))
            worst[c] = max(worst.get(c, 0.0), gap if v.get("verdict") == old.get("verdict") else 1.0)
            if v.get("verdict") != old.get("verdict") or abs((v.get("p_good") or 0) - (old.get("p_good") or 0)) > SPOT_TOLERANCE:
                ok.discard(c)
    for c in sorted(set(kept) - ok):
        console.print(f"rejudge: the {c} verdicts are asked again (the old ones differ from this judge's on a "
                      f"spot check of {len(sample)}: P(good) by up to {worst.get(c, 1.0):.3f})", markup=False, highlight=False)
    for c in sorted(ok):
        console.print(f"rejudge: the {c} verdicts are kept (the same prompted judge; {len(sample)} of them "
                      "asked again agreed)", markup=False, highlight=False)
    return ok
