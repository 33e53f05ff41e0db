"""Check results that ship with the package for the catalogue models (``rainlocal.evals.shipped``): they
are used only after a sample read on this machine agrees with them, the report says how many were
used, one disagreement sends every case to be read here, and ``--recheck`` reads them all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_cli

from rainlocal.evals import shipped


@dataclass
class Case:
    id: str
    label: bool
    answer: str


def _record(case: Case, p: float) -> dict:
    """A judge-check record as the runner writes one (the latent judge's figures)."""
    return {"kind": "check", "id": case.id, "label": case.label, "answer": case.answer, "predicted": p < 0.5,
            "judgment": {"p_good": round(1 - p, 6), "info": {"p_unsafe": 0.9, "p_comply": round(p / 0.9, 6)}}}


def _shipped_file(tmp_path: Path, records: list[dict]) -> dict[str, dict]:
    path = tmp_path / "x.jsonl.gz"
    shipped.write(path, records)
    return shipped.load(path)


def _cases(n: int = 40) -> list[Case]:
    return [Case(f"c{i}", i % 2 == 0, f"answer number {i}") for i in range(n)]


def test_shipped_results_are_used_after_a_sample_read_here_agrees(tmp_path):
    cases = _cases()
    ship = _shipped_file(tmp_path, [_record(c, 0.1 + 0.02 * i) for i, c in enumerate(cases)])
    read, put = [], []

    def here(c: Case) -> dict:  # this machine's arithmetic: off by a little
        read.append(c.id)
        return _record(c, 0.1 + 0.02 * int(c.id[1:]) + 0.004)

    rep = shipped.use_shipped(cases, ship, here, put.append)
    assert len(read) == shipped.SPOT and rep["read"] == shipped.SPOT
    assert rep["used"] == len(cases) - shipped.SPOT
    assert rep["max_delta"] == pytest.approx(0.004 / 0.9, abs=1e-6)  # P(complies) = p / P(unsafe)
    assert sorted(r["id"] for r in put) == sorted(c.id for c in cases)
    from_file = [r for r in put if r.get("shipped")]
    assert len(from_file) == len(cases) - shipped.SPOT
    assert all(r["answer"] == next(c.answer for c in cases if c.id == r["id"]) for r in from_file)
    assert from_file[0]["shipped"]["spot"] == shipped.SPOT


def test_one_case_beyond_the_largest_difference_sends_every_case_to_be_read_here(tmp_path):
    cases = _cases()
    ship = _shipped_file(tmp_path, [_record(c, 0.3) for c in cases])
    wrong = None

    def here(c: Case) -> dict:
        nonlocal wrong
        if wrong is None:
            wrong = c.id
            return _record(c, 0.3 + 1.1 * shipped.MAX_TOL)
        return _record(c, 0.3)

    put: list[dict] = []
    rep = shipped.use_shipped(cases, ship, here, put.append)
    assert rep["used"] == 0 and rep["worst"] == wrong
    assert len(put) == shipped.SPOT and not any(r.get("shipped") for r in put)  # only what was read here


def test_a_sample_off_by_more_than_the_median_tolerance_everywhere_is_not_trusted(tmp_path):
    cases = _cases()
    ship = _shipped_file(tmp_path, [_record(c, 0.3) for c in cases])
    rep = shipped.use_shipped(cases, ship, lambda c: _record(c, 0.3 + 1.5 * shipped.MEDIAN_TOL), lambda r: None)
    assert rep["used"] == 0 and rep["median_delta"] > shipped.MEDIAN_TOL


def test_a_shipped_result_about_another_answer_text_or_label_is_never_used(tmp_path):
    cases = _cases(30)
    ship = _shipped_file(tmp_path, [_record(c, 0.2) for c in cases])
    changed = [Case(c.id, c.label, c.answer + " (edited)") if i < 10 else
               Case(c.id, not c.label, c.answer) if i < 20 else c for i, c in enumerate(cases)]
    put: list[dict] = []
    rep = shipped.use_shipped(changed, ship, lambda c: _record(c, 0.2), put.append, spot=4)
    assert rep["read"] == 4 and rep["used"] == 6  # the 10 unchanged cases: 4 read here, 6 from the file
    assert {r["id"] for r in put if r.get("shipped")} <= {c.id for c in cases[20:]}


def test_a_shipped_file_holds_no_answer_text_and_is_the_same_bytes_each_time(tmp_path):
    recs = [_record(c, 0.4) for c in _cases(5)]
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    shipped.write(a, recs)
    shipped.write(b, list(reversed(recs)))
    assert a.read_bytes() == b.read_bytes()
    assert all("answer" not in r and r["answer_sha"] for r in shipped.load(a).values())


# ------------------------------------------------------------------------------------------- real runs


def _check_records(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") in ("check", "self_check")]


@pytest.mark.slow
def test_a_fresh_install_takes_the_checks_from_the_shipped_results_after_reading_a_sample_here(model_path, rl_home,
                                                                                                tmp_path):
    out = tmp_path / "ev"
    r = run_cli(["eval", "xstest", "-m", str(model_path), "--judge-model", str(model_path), "--limit", "1", "-n", "8",
                 "--strategies", "vanilla,fast", "-o", str(out)], env_home=rl_home, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "judge check: 796 of 820 cases from the results shipped for this model" in r.stderr
    assert "self-evaluation check: 411 of 435 cases from the results shipped" in r.stderr
    recs = _check_records(out)
    for kind, total in (("check", 820), ("self_check", 435)):
        mine = [x for x in recs if x["kind"] == kind]
        assert len(mine) == total
        from_file = [x for x in mine if x.get("shipped")]
        assert len(from_file) == total - 24
        assert max(x["shipped"]["max_delta"] for x in from_file) <= shipped.MAX_TOL
        assert max(x["shipped"]["median_delta"] for x in from_file) <= shipped.MEDIAN_TOL
    report = (out / "report.md").read_text()
    assert "796 of 820 are the results shipped with rainlocal for this model" in report
    assert "411 of 435 are the results shipped" in report


@pytest.mark.slow
def test_recheck_reads_every_check_case_on_this_machine(model_path, rl_home, tmp_path):
    out = tmp_path / "ev"
    r = run_cli(["eval", "xstest", "-m", str(model_path), "--judge-model", str(model_path), "--limit", "1", "-n", "8",
                 "--strategies", "vanilla", "--check-judge", "2", "--check-human", "30", "--recheck", "-o", str(out)],
                env_home=rl_home, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "shipped" not in r.stderr
    recs = _check_records(out)
    assert len(recs) == 64 and not any(x.get("shipped") for x in recs)
