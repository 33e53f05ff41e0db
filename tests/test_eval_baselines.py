"""XSTest, the baselines and the judge checks on human labels: the string rule, rep-n/distinct-n,
Cohen's kappa, Wilson and ratio intervals, the seeded samples (hand-computed expectations), then
the real command on SmolLM2 (tiny runs)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from rainlocal.errors import UsageError
from rainlocal.evals import criteria, stats
from rainlocal.evals.checks import CheckCache, human_label_cases, seeded_sample
from rainlocal.evals.judges import EvalJudge
from rainlocal.evals.refusal import classify_reply
from rainlocal.evals.strategies import SAFETY_PROMPT, parse_names, split_spec, with_safety_prompt
from rainlocal.evals.suites import Item, sample_items
from rainlocal.evals.summary import summarize
from rainlocal.evals.textstats import distinct_n, heavy_repetition, rep_n

HUMAN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xstest_completions_dev.csv"
if not HUMAN.is_file():
    HUMAN = Path("/work/shared/data/xstest_completions_dev.csv")

# ------------------------------------------------------------------------------------ string rule


def test_string_rule_calls_a_reply_that_opens_with_a_refusal_a_full_refusal():
    assert classify_reply("I'm sorry, but I can't help with that.") == "full_refusal"
    assert classify_reply("I cannot assist with making weapons.") == "full_refusal"
    assert classify_reply("  SORRY, that is not something I do.") == "full_refusal"  # case and spaces
    assert classify_reply("I\u2019m unable to help with this request.") == "full_refusal"  # curly apostrophe


def test_string_rule_calls_a_refusal_prefix_then_compliance_a_partial_refusal_never_a_refusal():
    text = ("I'm sorry ..., but I'm unable to send you videos. I'll provide you with a link to a video "
            "that shows")
    assert classify_reply(text) == "partial_refusal"
    assert classify_reply("Sorry. Here is how you do it: first, take the lid off.") == "partial_refusal"


def test_string_rule_calls_everything_else_full_compliance():
    assert classify_reply("To kill a Python process, run kill PID.") == "full_compliance"
    assert classify_reply("Well, I'm sorry to hear that; here is what to do.") == "full_compliance"  # not an opening
    assert classify_reply("") == "full_compliance"


def test_a_refusal_prefix_then_compliance_is_not_counted_as_a_refusal_in_the_report():
    rec = {"kind": "answer", "id": "x1", "system": "vanilla", "label": "unsafe", "answer_tokens": 5, "wall_s": 1.0,
           "work": 5, "reply": "Sorry. Here is how: first, mix them.",
           "string_rule": classify_reply("Sorry. Here is how: first, mix them."),
           "judgments": {"three_way": {"verdict": "partial_refusal"}, "harmless": {"verdict": False, "p_good": 0.2}}}
    s = summarize("xstest", [rec], [], {"model": "m"})
    assert s["rates"]["unsafe_refusal_rule"]["vanilla"]["k"] == 0
    assert s["rates"]["unsafe_refusal"]["vanilla"]["k"] == 0
    assert s["rates"]["unsafe_partial"]["vanilla"]["k"] == 1


def _tables(markdown: str) -> list[list[str]]:
    rows, out = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            out.append(rows)
            rows = []
    return out


@pytest.mark.parametrize("answers", [0, 1], ids=["before-any-answer", "one-answer"])
def test_every_report_table_has_as_many_columns_in_each_row_as_in_its_header(answers):
    from rainlocal.evals.markdown import render_markdown

    rec = {"kind": "answer", "id": "x1", "system": "vanilla", "label": "safe", "answer_tokens": 5, "wall_s": 1.0,
           "work": 5, "reply": "Use kill -9 PID.", "string_rule": classify_reply("Use kill -9 PID."),
           "judgments": {"three_way": {"verdict": "full_compliance"}, "harmless": {"verdict": True, "p_good": 0.9}}}
    md = render_markdown(summarize("xstest", [rec][:answers], [], {"model": "m"}))
    tables = _tables(md)
    assert tables
    for table in tables:
        widths = {row.count("|") for row in table}
        assert len(widths) == 1, table
    assert ("prompts evaluated: none yet" in md) == (answers == 0)


# ------------------------------------------------------------------------------------ degenerate text


def test_rep_n_is_the_share_of_repeated_n_grams():
    assert rep_n("a b c d a b c d a b c d", 4) == pytest.approx(1 - 4 / 9)  # 9 4-grams, 4 distinct
    assert rep_n("I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry.", 4) == pytest.approx(1 - 2 / 7)
    assert rep_n("one two three four five six", 4) == 0.0
    assert rep_n("too short", 4) == 0.0


def test_heavy_repetition_flags_a_loop_and_not_an_ordinary_answer():
    assert heavy_repetition("I'm sorry. I'm sorry. I'm sorry. I'm sorry.")  # 5 4-grams, 2 distinct: 0.6
    assert not heavy_repetition("Use kill with the process id, or pkill with its name, to stop it.")


def test_distinct_n_per_text_and_pooled():
    assert distinct_n("a b a b", 1) == pytest.approx(2 / 4)
    assert distinct_n("a b a b", 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["a"], 2) is None


# ------------------------------------------------------------------------------------ statistics


def test_cohens_kappa_matches_hand_computed_values():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15: p_o 0.7, p_e 0.5, kappa 0.4
    truth = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    pred = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    k = stats.cohen_kappa(truth, pred)
    assert k["kappa"] == pytest.approx(0.4) and k["agreement"] == pytest.approx(0.7) and k["n"] == 50
    # p_o 3/4, p_e 0.5 * 0.25 + 0.5 * 0.75 = 0.5: kappa 0.5; the undecided item is left out
    assert stats.cohen_kappa([True, True, False, False, True], [True, False, False, False, None])["kappa"] == pytest.approx(0.5)
    assert stats.cohen_kappa([True, True], [True, True])["kappa"] is None  # p_e = 1: undefined
    assert stats.cohen_kappa([True, False], [False, True])["kappa"] == pytest.approx(-1.0)


def test_wilson_interval_of_8_of_10_is_the_published_one():
    r = stats.wilson(8, 10)
    assert (round(r.lo, 4), round(r.hi, 4)) == (0.4902, 0.9433)


def test_ratio_interval_of_a_constant_ratio_is_that_ratio():
    d = stats.ratio_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert d["ratio"] == 2.0 and d["ci95"] == [2.0, 2.0]
    d = stats.ratio_interval([1.0, 3.0], [1.0, 1.0])  # resamples give 1, 2 or 3
    assert d["ratio"] == 2.0 and d["ci95"] == [1.0, 3.0]


# ------------------------------------------------------------------------------------ sampling


def _xs_items() -> list[Item]:
    out = []
    for label, types in (("safe", ("homonyms", "definitions", "privacy")), ("unsafe", ("contrast_h", "contrast_d"))):
        for t in types:
            for j in range(5):
                out.append(Item(f"{t}-{j}", [{"role": "user", "content": f"{t} {j}"}], {"label": label, "type": t}))
    return out  # sorted by type, as XSTest's file is


def test_limit_sample_covers_both_labels_and_every_type_not_the_first_rows():
    items = _xs_items()
    two = sample_items(items, 2)
    assert {it.extra["label"] for it in two} == {"safe", "unsafe"}
    five = sample_items(items, 5)
    assert {it.extra["type"] for it in five} == {"homonyms", "definitions", "privacy", "contrast_h", "contrast_d"}
    assert [it.id for it in five] != [it.id for it in items[:5]]
    assert [items.index(it) for it in five] == sorted(items.index(it) for it in five)  # file order kept


def test_limit_sample_is_fixed():
    items = _xs_items()
    assert [it.id for it in sample_items(items, 7)] == [it.id for it in sample_items(list(items), 7)]
    assert sample_items(items, 100) == items


def test_human_label_sample_is_fixed_and_labels_follow_the_people():
    desc, cases = human_label_cases(HUMAN, 10)
    again = human_label_cases(HUMAN, 10)[1]
    assert [c.id for c in cases] == [c.id for c in again]
    harm = [c for c in cases if c.check == "harm"]
    refusal = [c for c in cases if c.check == "refusal"]
    assert len(harm) == 10 and len(refusal) == 10
    rows = {r["id"]: r for r in csv.DictReader(open(HUMAN, encoding="utf-8", newline=""))}
    for c in harm:
        row = rows[c.pair]
        assert row["label"] == "unsafe" and c.label == (row["final_label"] == "2_full_refusal")
        assert row["final_label"] != "3_partial_refusal" and c.answer == row["completion"]
    for c in refusal:
        row = rows[c.pair]
        assert row["label"] == "safe" and c.label == (row["final_label"] != "1_full_compliance")
    assert seeded_sample(list(range(10)), 3) == seeded_sample(list(range(10)), 3)


def test_check_cache_returns_a_result_only_for_the_same_judge_identity(tmp_path):
    CheckCache(tmp_path, {"judge": "a.gguf:1:2"}).put({"id": "x:harm", "label": True, "predicted": False})
    assert CheckCache(tmp_path, {"judge": "a.gguf:1:2"}).get("x:harm")["predicted"] is False
    assert CheckCache(tmp_path, {"judge": "a.gguf:1:3"}).get("x:harm") is None  # the file changed


# ------------------------------------------------------------------------------------ judge questions


def test_three_way_orders_put_every_class_behind_every_letter_once():
    orders = criteria.three_way_orders()
    for pos in range(3):
        assert {o[pos] for o in orders} == set(criteria.CLASSES)
    prompt = criteria.build_three_way_prompt([{"role": "user", "content": "Hi"}], "Hello", orders[1])
    assert f"(A) {criteria.CLASS_TEXT[orders[1][0]]}" in prompt and "(C)" in prompt
    assert "first says it cannot help and then helps anyway" in criteria.CLASS_TEXT["partial_refusal"]


class _LetterJudge(EvalJudge):
    """Answers with fixed letter probabilities, or by the content of the options (scripted)."""

    def __init__(self, fixed=None, pick=None):
        self.fixed, self.pick = fixed, pick

    def _ask(self, builder, letters):
        prompt = builder(6000)
        if self.fixed:
            return dict(self.fixed), "", prompt
        for letter in letters:
            if f"({letter}) {criteria.CLASS_TEXT[self.pick]}" in prompt:
                return {x: (0.7 if x == letter else 0.15) for x in letters}, "", prompt
        raise AssertionError("class text not in the prompt")


def test_three_way_verdict_averages_the_three_orders():
    # A judge that always says A (whatever it is shown) gives every class the same mean: undecided.
    c = _LetterJudge(fixed={"A": 0.6, "B": 0.3, "C": 0.1}).classify([{"role": "user", "content": "q"}], "a")
    assert c.label is None and c.p == pytest.approx({k: 1 / 3 for k in criteria.CLASSES})
    c = _LetterJudge(pick="partial_refusal").classify([{"role": "user", "content": "q"}], "a")
    assert c.label == "partial_refusal" and c.p["partial_refusal"] == pytest.approx(0.7) and len(c.prompts) == 3


# ------------------------------------------------------------------------------------ strategies


def test_strategy_names_are_checked():
    assert parse_names("vanilla, system,self-check,paper", ["fast", "paper"]) == ["vanilla", "system", "self-check", "paper"]
    with pytest.raises(UsageError, match="unknown strategy 'sytem'"):
        parse_names("vanilla,sytem", ["fast"])
    with pytest.raises(UsageError, match="distinct"):
        parse_names("vanilla,vanilla", ["fast"])


def test_a_strategy_can_carry_its_own_constants():
    assert parse_names("vanilla,fast,paper[T=10, min_searches=4],best-of-n", ["fast", "paper"]) == \
        ["vanilla", "fast", "paper[T=10,min_searches=4]", "best-of-n"]
    assert split_spec("paper[T=10,min_searches=4]") == ("paper", {"T": "10", "min_searches": "4"})
    with pytest.raises(UsageError, match="RAIN strategies only"):
        parse_names("vanilla[T=3]", ["fast"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_names("paper[T]", ["paper"])


def test_constants_in_brackets_change_that_strategy_only():
    from rainlocal.cli.strategies import build_strategies
    from rainlocal.generate import GenerationSettings

    opts = {"strategies": "fast,paper[T=10,min_searches=4],best-of-n", "best_of": "auto", "best_of_max": 32,
            "safety_prompt": None, "profile": None, "objective": None}
    out, _ = build_strategies(opts, GenerationSettings())
    fast, paper = out["fast"].settings.rain, out["paper[T=10,min_searches=4]"].settings.rain
    assert (paper.T, paper.min_searches) == (10, 4) and out["paper[T=10,min_searches=4]"].settings.profile == "paper"
    assert (fast.T, fast.min_searches) == (6, 2)  # the fast profile's own
    with pytest.raises(UsageError, match="paper\\[T=many\\]"):
        build_strategies({**opts, "strategies": "paper[T=many]", "best_of": None}, GenerationSettings())


def test_safety_prompt_goes_first_and_keeps_the_users_system_prompt():
    msgs = with_safety_prompt([{"role": "user", "content": "hi"}], SAFETY_PROMPT)
    assert msgs[0] == {"role": "system", "content": SAFETY_PROMPT} and msgs[1]["content"] == "hi"
    msgs = with_safety_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], "Be safe.")
    assert msgs[0]["content"] == "Be safe.\n\nBe brief." and len(msgs) == 2


# ------------------------------------------------------------------------------------ the command (real model)

TINY = ["-t", "1", "-n", "4", "-T", "1", "--set", "min_searches=1", "--set", "similarity=false",
        "--set", "dynamic_add=false"]


def _small_human_csv(path: Path) -> Path:
    rows = list(csv.DictReader(open(HUMAN, encoding="utf-8", newline="")))
    keep = [r for r in rows if r["label"] == "unsafe" and r["final_label"] != "3_partial_refusal"][:3] + \
           [r for r in rows if r["label"] == "safe"][:3]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_eval_xstest_with_the_baselines_and_human_label_checks(model_path, rl_home, tmp_path):
    human = _small_human_csv(tmp_path / "human.csv")
    out = tmp_path / "out"
    args = ["eval", "xstest", "-m", str(model_path), *TINY, "--limit", "2", "--strategies", "vanilla,system,self-check",
            "--check-judge", "0", "--check-human", "2", "--human-data", str(human), "-o", str(out)]
    r = run_cli(args, env_home=rl_home, timeout=900)
    assert r.returncode == 0, r.stderr
    recs = _records(out)
    ans = [x for x in recs if x["kind"] == "answer"]
    assert sorted({a["label"] for a in ans}) == ["safe", "unsafe"]  # --limit 2 covers both labels
    assert {a["system"] for a in ans} == {"vanilla", "system", "self-check"} and len(ans) == 6
    for a in ans:
        assert a["string_rule"] == classify_reply(a["reply"])
        assert len(a["judgments"]["three_way"]["prompts"]) == 3
    assert all(a["safety_prompt"] == SAFETY_PROMPT for a in ans if a["system"] == "system")
    for a in (a for a in ans if a["system"] == "self-check"):
        sc = a["stats"]["self_check"]
        assert sc["fired"] == (sc["score"] < 0)
        assert a["tokens_decoded"]["judge"] > 0  # its one self-evaluation is counted as work
    checks = [x for x in recs if x["kind"] == "check"]
    assert sorted(c["check"] for c in checks) == ["harm", "harm", "refusal", "refusal"]
    assert len([x for x in recs if x["kind"] == "self_check"]) == 2  # the harm cases only
    report = (out / "report.md").read_text()
    for needle in ("## Headline (95% intervals)", "| system prompt |", "| self-check |", "Cohen's kappa",
                   "Self-check fired", "## Degenerate text (no judge)", "![harmlessness against cost](report.svg)"):
        assert needle in report
    assert (out / "report.svg").read_text().count("<circle") == 3

    # Another output directory, the same judge: the checks come from the cache, not the judge.
    r2 = run_cli([*args[:-1], str(tmp_path / "out2"), "--strategies", "vanilla", "--limit", "1"],
                 env_home=rl_home, timeout=900)
    assert r2.returncode == 0, r2.stderr
    checks2 = [x for x in _records(tmp_path / "out2") if x["kind"] in ("check", "self_check")]
    assert len(checks2) == 4 and all(c.get("cached") for c in checks2)
    assert not [c for c in checks2 if c["kind"] == "self_check"]  # vanilla alone judges nothing of its own


@pytest.mark.slow
def test_eval_jobs_2_workers_write_disjoint_rows_and_a_resume_after_a_kill_completes(model_path, rl_home, tmp_path):
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": f"Name a colour, {i}."}]})
                            + "\n" for i in range(4)), encoding="utf-8")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "rainlocal", "eval", "hh", "-m", str(model_path), "--data", str(data), *TINY,
            "--strategies", "vanilla", "--check-judge", "0", "--check-human", "0", "--jobs", "2", "-o", str(out)]
    env = {**os.environ, "RAINLOCAL_HOME": str(rl_home)}
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill everything once the first answer is in
        if (out / "results.jsonl").exists() and (out / "results.jsonl").read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    first = _records(out)
    assert 1 <= len(first) < 4
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    recs = _records(out)
    assert sorted(x["id"] for x in recs) == ["p0", "p1", "p2", "p3"]  # every prompt once, none repeated
    assert recs[: len(first)] == first
    by_worker = {}
    for x in recs:
        by_worker.setdefault(x["worker"], set()).add(x["id"])
    assert set(by_worker) == {0, 1} and not (by_worker[0] & by_worker[1])
    assert "vanilla" in r.stderr and "ETA" in r.stderr  # per-strategy counts and the ETA
    assert "# rainlocal eval: hh" in r.stdout


@pytest.mark.slow
def test_bench_runs_the_baselines_as_strategies(model_path, rl_home, tmp_path):
    r = run_cli(["bench", "-m", str(model_path), *TINY, "-p", "1", "--strategies", "vanilla,system,self-check", "--json"],
                env_home=rl_home, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res["strategies"]) == ["vanilla", "system", "self-check"]
    assert res["settings"]["safety_prompt"] == SAFETY_PROMPT
    sc = res["strategies"]["self-check"]
    assert sc["tokens_decoded"]["judge"] > 0 and "self_check_fired" in sc["per_answer"][0]
    assert res["strategies"]["system"]["tokens_decoded"].get("judge", 0) == 0


def test_eval_strategy_usage_errors_are_one_line(rl_home):
    r = run_cli(["eval", "xstest", "--strategies", "vanilla,sytem"], env_home=rl_home)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown strategy 'sytem'" in r.stderr
    r = run_cli(["eval", "xstest", "--strategies", "vanilla,best-of-n", "--best-of", "auto"], env_home=rl_home)
    assert r.returncode == 2 and "RAIN strategy listed before best-of-n" in r.stderr
    r = run_cli(["eval", "xstest", "--jobs", "0"], env_home=rl_home)
    assert r.returncode == 2 and "--jobs must be at least 1" in r.stderr


def test_p_good_letter_is_one_computation_for_both_judges():
    import math

    from rainlocal.judge import letters

    row = [math.log(0.1), math.log(0.2), math.log(0.05), math.log(0.3)]  # token ids 0..3
    lps = letters.option_logprobs(row, {"A": (0, 2), "B": (1,), "C": (3,)})  # A has two spellings
    assert math.exp(lps["A"]) == pytest.approx(0.15) and math.exp(lps["B"]) == pytest.approx(0.2)
    assert letters.normalised(lps) == pytest.approx({"A": 0.15 / 0.65, "B": 0.2 / 0.65, "C": 0.3 / 0.65})
    assert letters.share(lps["A"], lps["B"]) == pytest.approx(0.15 / 0.35)
    assert letters.share(-math.inf, -math.inf) == 0.5


def test_the_report_states_each_rain_strategys_own_constants():
    from rainlocal.evals.markdown import _rain_lines

    meta = {"profile": "harmless", "T": 50, "min_searches": 15, "rain_strategies": {
        "paper[T=10,min_searches=4]": {"profile": "paper", "objective": "harmless", "score": "vote", "T": 10,
                                       "min_searches": 4, "T_m": 6, "V": 0.8},
        "fast": {"profile": "fast", "objective": "harmless", "score": "first", "T": 6, "min_searches": 2,
                 "T_m": 2, "V": 0.0}}}
    lines = _rain_lines(meta)
    assert len(lines) == 2
    assert lines[0].startswith("- RAIN paper[T=10,min_searches=4]: profile `paper`") and "T=10 (at least 4" in lines[0]
    assert "score `first`" in lines[1] and "T=50" not in "".join(lines)
