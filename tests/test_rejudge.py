"""The rejudge's decisions (``rainlocal.evals.rejudge``): which old verdicts may be kept, and that a spot
check keeps them only when the judge repeats them. The judge here is a table of verdicts: what is
under test is the bookkeeping around it (the command runs on a real model in test_eval_latent.py)."""

from types import SimpleNamespace

from rainlocal.evals.judges import Verdict
from rainlocal.evals.rejudge import SPOT_TOLERANCE, _spot_check, keepable


class _Quiet:
    def __init__(self):
        self.lines = []

    def print(self, text, **_):
        self.lines.append(text)


class _TableJudge:
    def __init__(self, p_good):
        self.p_good = p_good

    def judge(self, criterion, messages, answer, extra, *, prompt_id=None):
        p = self.p_good[prompt_id]
        return Verdict(criterion, p > 0.5, p)


def _answers(ps):
    return [{"id": f"h{i}", "reply": "r", "judgments": {"helpful": {"verdict": p > 0.5, "p_good": p}}}
            for i, p in enumerate(ps)]


def _case(_record):
    return [{"role": "user", "content": "q"}], {}


def test_old_verdicts_are_kept_when_the_judge_repeats_them_within_the_tolerance():
    old = [0.9, 0.2, 0.7, 0.4]
    judge = _TableJudge({f"h{i}": p + SPOT_TOLERANCE / 2 for i, p in enumerate(old)})
    console = _Quiet()
    assert _spot_check(_answers(old), {"helpful"}, judge, _case, console) == {"helpful"}
    assert "kept" in console.lines[0]


def test_one_flipped_verdict_in_the_spot_check_asks_every_verdict_again():
    old = [0.9, 0.2, 0.52, 0.4]
    judge = _TableJudge({"h0": 0.9, "h1": 0.2, "h2": 0.49, "h3": 0.4})  # h2 crosses 0.5
    console = _Quiet()
    assert _spot_check(_answers(old), {"helpful"}, judge, _case, console) == set()
    assert "asked again" in console.lines[0] and "1.000" in console.lines[0]


def test_only_the_prompted_fallback_of_the_same_model_and_method_is_keepable():
    fallback = SimpleNamespace(method="probs", engine=SimpleNamespace(path=SimpleNamespace(name="j.gguf")))
    judge = SimpleNamespace(fallback=fallback)
    assert "helpful" in keepable({"judge": "local GGUF j.gguf", "judge_method": "probs"}, judge)
    assert "harmless" not in keepable({"judge": "local GGUF j.gguf", "judge_method": "probs"}, judge)
    assert keepable({"judge": "local GGUF other.gguf", "judge_method": "probs"}, judge) == set()
    assert keepable({"judge": "local GGUF j.gguf", "judge_method": "generate"}, judge) == set()
    assert keepable({"judge": "local GGUF j.gguf", "judge_method": "probs"}, SimpleNamespace()) == set()
