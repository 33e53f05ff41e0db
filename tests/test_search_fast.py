"""The fast profile's loop (draft a clause, judge it once, search where the judge objects) on the
scripted fake engine: what it shows, when it rewinds and how far."""

import numpy as np

from rainlocal.search.events import Check, Commit, Done, Gate, Rewind, Step
from rainlocal.search.fast import clause_ends, draft_clause, fast_generate
from rainlocal.search.settings import RainSettings, SamplingSettings, StopRule, profile_settings

try:
    from tests.fake_engine import FakeEngine, KeywordEvaluator, bigram_engine
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from fake_engine import FakeEngine, KeywordEvaluator, bigram_engine

PROMPT = [1, 2]
VOCAB = ["<eos>", "<bos>", "Q", " Sure", ";", " here", " is", " the", " recipe", ".", " Sorry", ",", " I",
         " cannot", " help", " Paris", " nice"]
# Greedy answer: " Sure; here is the recipe." (two clauses); the harmless one: " Sorry, I cannot help."
TABLE = {
    None: {" Sure": 0.6, " Sorry": 0.4},
    " Sure": {";": 1}, ";": {" here": 0.7, " Paris": 0.3}, " Paris": {" nice": 1}, " nice": {".": 1}, " here": {" is": 1}, " is": {" the": 1}, " the": {" recipe": 1},
    " recipe": {".": 1}, ".": {"<eos>": 1},
    " Sorry": {",": 1}, ",": {" I": 1}, " I": {" cannot": 1}, " cannot": {" help": 1}, " help": {".": 1},
}


def engine() -> FakeEngine:
    return bigram_engine(VOCAB, TABLE, prompt_len=len(PROMPT), default={".": 1})


class ScoreBy:
    """The first rule whose word is in the judged text gives the score; otherwise ``default``."""

    def __init__(self, rules: list[tuple[str, float]], default: float = 1.0):
        self.rules = rules
        self.default = default
        self.calls: list[str] = []

    def score(self, text: str) -> float:
        self.calls.append(text)
        return next((s for w, s in self.rules if w in text), self.default)


#: The fast profile on raw scores with round thresholds, so each test states the score that decides.
RAW = profile_settings("fast").with_overrides(
    {"calibrate": False, "accept": 0.3, "hold": 0.0, "rewind_further": -0.5, "V": 0.5, "min_clause_tokens": 1})


def answer(evaluator, settings: RainSettings | None = None, max_tokens: int = 32, should_stop=None):
    events = list(fast_generate(engine(), PROMPT, evaluator, settings or RAW,
                                SamplingSettings(temp=0, seed=0), StopRule(max_tokens=max_tokens),
                                should_stop=should_stop))
    assert isinstance(events[-1], Done)
    return events


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_a_clause_ends_at_a_delimiter_even_with_trailing_spaces():
    assert clause_ends("Sure, ", ",.;")
    assert clause_ends("Paris.", ",.;")
    assert not clause_ends("Paris is", ",.;")
    assert not clause_ends("", ",.;")


def draft(eng, base, *, max_tokens=32, limit=24, min_tokens=1):
    """A greedy draft after ``base`` (word list) with delimiters , . ;"""
    rng = __import__("numpy").random.default_rng(0)
    toks = draft_clause(eng, PROMPT, eng.ids(*base) if base else [], SamplingSettings(temp=0),
                        StopRule(max_tokens=max_tokens), ",.;", limit, rng, min_tokens=min_tokens)
    return eng.detokenize(toks), toks


def test_draft_stops_at_the_first_delimiter_and_keeps_an_end_of_generation_token():
    eng = engine()
    assert draft(eng, [])[0] == " Sure;"
    assert draft(eng, [" Sure", ";"])[0] == " here is the recipe."
    assert draft(eng, [" Sure", ";", " here", " is", " the", " recipe", "."])[1] == [0]  # <eos> alone: the end


def test_draft_is_cut_at_the_token_limit():
    assert draft(engine(), [" Sure", ";"], limit=2)[0] == " here is"


def test_accepted_clauses_are_shown_as_drafted_without_any_search():
    ev = answer(ScoreBy([], default=0.9))
    done = ev[-1]
    assert done.text == " Sure; here is the recipe."
    assert done.stop_reason == "eos"
    assert [c.verdict for c in of(ev, Check)] == ["accept", "accept", "accept"]
    assert of(ev, Rewind) == [] and of(ev, Step) == []
    assert done.stats["searches"] == 0
    assert done.stats["evaluations"] == 3  # one per clause (the last clause is the end token alone)
    assert done.stats["tokens_decoded"]["generate"] == 0 and done.stats["tokens_decoded"]["draft"] > 0


def test_a_rejected_clause_is_rewound_to_its_start_and_replaced_by_the_search():
    ev = answer(KeywordEvaluator(bad=["Sure"]))
    done = ev[-1]
    assert done.text == " Sorry, I cannot help."
    checks = of(ev, Check)
    assert checks[0].verdict == "reject" and checks[0].text == " Sure;"
    rewinds = of(ev, Rewind)
    assert len(rewinds) == 1 and not rewinds[0].further and rewinds[0].dropped == " Sure;"
    assert done.stats["search_phases"] == 1 and done.stats["searches"] >= 2
    assert "Sure" not in "".join(c.text for c in of(ev, Commit))  # rejected text is never shown


def test_the_rejected_draft_counts_as_evidence_against_its_first_token():
    """The search's first root child visit comes from the rejected draft, not from a new search."""
    evaluator = KeywordEvaluator(bad=["Sure"])
    ev = answer(evaluator)
    first_step = of(ev, Step)[0]
    sure = next(c for c in first_step.candidates if c.text == " Sure")
    assert sure.fn >= 1 and sure.q < 0


def test_a_lukewarm_clause_is_held_back_until_a_confident_one_follows():
    ev = answer(ScoreBy([("recipe", 0.9), ("Sure", 0.1)]))
    checks = of(ev, Check)
    assert [c.verdict for c in checks[:2]] == ["hold", "accept"]
    shown = [c.text for c in of(ev, Commit) if c.text]
    # Nothing was shown before the confident clause: the held clause came out together with it.
    first_commit = next(i for i, e in enumerate(ev) if isinstance(e, Commit) and e.text)
    accept_at = next(i for i, e in enumerate(ev) if isinstance(e, Check) and e.verdict == "accept")
    assert first_commit > accept_at
    assert "".join(shown) == " Sure; here is the recipe."


def test_a_clearly_bad_clause_after_a_held_one_rewinds_further_back():
    ev = answer(ScoreBy([("recipe", -1.0), ("Sure", 0.1)]))
    done = ev[-1]
    rewinds = of(ev, Rewind)
    assert rewinds[0].further and rewinds[0].dropped == " Sure; here is the recipe."
    assert done.stats["rewinds_further"] == 1
    assert done.text == " Sorry, I cannot help."
    assert "Sure" not in done.text


def test_a_mildly_bad_clause_keeps_the_held_one_and_rewinds_only_to_its_own_start():
    ev = answer(ScoreBy([("recipe", -0.2), ("Sure", 0.1)]))
    rewinds = of(ev, Rewind)
    assert not rewinds[0].further and rewinds[0].dropped == " here is the recipe."
    assert ev[-1].text == " Sure; Paris nice."  # the held clause was committed when the rewind kept it


def test_the_length_limit_ends_the_answer_inside_a_clause():
    ev = answer(ScoreBy([], default=0.9), max_tokens=4)
    assert ev[-1].stop_reason == "length"
    assert len(ev[-1].tokens) == 4


def test_should_stop_ends_with_interrupted_keeping_what_was_shown():
    calls = {"n": 0}

    def stop_after_first_clause():
        calls["n"] += 1
        return calls["n"] > 3

    ev = answer(ScoreBy([], default=0.9), should_stop=stop_after_first_clause)
    assert ev[-1].stop_reason == "interrupted"
    assert ev[-1].text == "".join(c.text for c in of(ev, Commit))


def test_calibrated_scores_measure_against_compliance_to_the_same_request():
    from rainlocal.search.fast import COMPLIANCE_ANCHOR, Calibrated

    raw = {COMPLIANCE_ANCHOR: -0.5, "better": -0.4, "same": -0.5, "worse": -0.6, "awful": -1.0}
    cal = Calibrated(ScoreBy([]), scale=0.2)
    cal.evaluator.score = lambda text: raw[text]
    assert abs(cal.score("better") - 0.5) < 1e-9
    assert abs(cal.score("same")) < 1e-9
    assert abs(cal.score("worse") + 0.5) < 1e-9  # 0.1 below plain compliance = half a scale unit
    assert cal.score("awful") == -1.0  # clipped


def test_the_anchor_is_judged_in_the_same_call_as_the_first_draft():
    from rainlocal.search.fast import COMPLIANCE_ANCHOR, Calibrated

    class Batched(ScoreBy):
        def __init__(self):
            super().__init__([(COMPLIANCE_ANCHOR, 0.2)], default=0.0)
            self.batches = []

        def score_many(self, texts):
            self.batches.append(list(texts))
            return [self.score(t) for t in texts]

    judge = Batched()
    cal = Calibrated(judge, scale=0.2)
    assert abs(cal.score("draft") + 1.0) < 1e-9
    assert judge.batches == [[COMPLIANCE_ANCHOR, "draft"]]


def test_calibrated_fast_profile_rejects_a_clause_judged_worse_than_plain_compliance():
    from rainlocal.search.fast import COMPLIANCE_ANCHOR

    judge = ScoreBy([(COMPLIANCE_ANCHOR, 0.2), ("Sure", -0.5)], default=0.5)
    ev = answer(judge, settings=profile_settings("fast"))
    assert of(ev, Check)[0].verdict == "reject"
    assert ev[-1].text == " Sorry, I cannot help."


def test_the_fast_profile_is_the_default_and_paper_keeps_the_reference_constants():
    from rainlocal.search.settings import DEFAULT_PROFILE

    assert DEFAULT_PROFILE == "fast"
    fast, paper = profile_settings("fast"), profile_settings("paper")
    assert fast.loop == "draft" and fast.score == "latent" and not fast.calibrate
    prompted = profile_settings("fast-prompted")
    assert prompted.loop == "draft" and prompted.score == "first" and prompted.calibrate
    assert (paper.loop, paper.T, paper.T_m, paper.V, paper.c, paper.score) == ("tree", 50, 6, 0.8, 2.0, "vote")


def test_without_the_latent_judge_the_fast_profile_becomes_fast_prompted_and_the_tree_search_votes():
    from rainlocal.search.settings import without_latent

    assert without_latent(profile_settings("fast")) == profile_settings("fast-prompted")
    tree = profile_settings("paper").with_overrides({"score": "latent"})
    assert without_latent(tree).score == "vote"


def test_later_clauses_run_past_delimiters_until_the_minimum_length():
    assert draft(engine(), [" Sorry"], min_tokens=3)[0] == ", I cannot help."  # the comma after one token did not end it


def test_a_clause_runs_to_the_limit_rather_than_leave_a_stub_shorter_than_a_clause():
    eng = engine()
    # 6 tokens left: ", I cannot help." would end at "." with 1 token left, less than a 2-token clause
    text, toks = draft(eng, [" Sorry"], max_tokens=7, min_tokens=2)
    assert eng.detokenize(toks[:-1]) == ", I cannot help." and toks[-1] == 0  # ran on to the end token
    # with room left, the clause ends at the delimiter
    assert draft(eng, [" Sorry"], min_tokens=2)[0] == ", I cannot help."


class LatentLike:
    """A judge shaped like the latent one: it reads the request first (``p_unsafe``) and scores tokens;
    harm = P(unsafe) x P(complies), with P(complies) 0.9 for text with " Sure", else 0.1."""

    def __init__(self, eng: FakeEngine, p_unsafe: float):
        self.eng = eng
        self.p_unsafe = p_unsafe
        self.tokens: list[list[int]] = []
        self.texts: list[str] = []
        self.last: dict[str, float] = {}

    @property
    def score_floor(self) -> float:
        return 1.0 - 2.0 * self.p_unsafe

    def score_tokens(self, tokens) -> float:
        self.tokens.append(list(tokens))
        pc = 0.9 if " Sure" in self.eng.detokenize(tokens) else 0.1
        self.last = {"p_unsafe": self.p_unsafe, "p_comply": pc, "harm": self.p_unsafe * pc}
        return 1.0 - 2.0 * self.p_unsafe * pc

    def score(self, text: str) -> float:
        self.texts.append(text)
        return self.score_tokens(self.eng.tokenize(text))


LATENT = profile_settings("fast").with_overrides({"min_clause_tokens": 1})


def latent_answer(p_unsafe: float, settings: RainSettings = LATENT, temp: float = 0.0, seed: int = 0):
    eng = engine()
    judge = LatentLike(eng, p_unsafe)
    events = list(fast_generate(eng, PROMPT, judge, settings, SamplingSettings(temp=temp, seed=seed),
                                StopRule(max_tokens=32)))
    return eng, judge, events


def test_a_request_no_answer_could_fail_is_answered_as_plain_decoding_without_checks():
    from rainlocal.search.vanilla import vanilla_generate

    eng, judge, events = latent_answer(0.2, temp=1.0, seed=3)  # harm <= 0.2: no clause can score below 0
    gate = of(events, Gate)
    assert [g.decision for g in gate] == ["pass"]
    assert of(events, Check) == [] and judge.tokens == []
    plain = list(vanilla_generate(engine(), PROMPT, SamplingSettings(temp=1.0, seed=3), StopRule(max_tokens=32)))
    assert events[-1].text == plain[-1].text  # the same sampler, the same tokens
    assert all(len(c.tokens) == 1 for c in of(events, Commit))  # shown token by token, as plain decoding


def test_a_suspicious_request_gets_several_openings_and_the_best_judged_one_is_kept():
    settings = LATENT.with_overrides({"opening_drafts": 4, "first_draft_tokens": 2, "opening_pick": "best"})
    eng, judge, events = latent_answer(0.9, settings, temp=1.0, seed=1)
    assert [g.decision for g in of(events, Gate)] == ["check"]
    first = of(events, Check)[0]
    openings = [t for t in judge.tokens if len(t) <= 2]
    assert len(openings) >= 2  # several openings were judged before anything was shown
    assert first.verdict == "accept" and "Sorry" in first.text  # the refusal opening beat " Sure;"
    assert first.detail["harm"] < 0.5
    assert events[-1].text.startswith(" Sorry")


def test_the_latent_judge_is_given_the_tokens_the_search_decoded_not_text_to_tokenize_again():
    eng, judge, events = latent_answer(0.9)
    assert judge.tokens and judge.texts == []
    shown = events[-1].tokens
    assert any(t == shown[: len(t)] for t in judge.tokens)  # the shown answer's own clauses were judged


def test_a_judge_that_reads_states_also_gives_the_tree_search_its_embeddings():
    from rainlocal.search.rain import rain_generate

    eng = engine()
    judge = LatentLike(eng, 0.9)
    calls = []

    def embed_suffixes(context, tokens, starts):
        calls.append((list(context), list(tokens), list(starts)))
        rows = np.zeros((len(starts), 8), dtype=np.float32)
        for i, s in enumerate(starts):
            rows[i, len(tokens[s:]) % 8] = 1.0  # any unit rows will do
        return rows

    judge.embed_suffixes = embed_suffixes
    before = eng.embed_calls
    events = list(rain_generate(eng, PROMPT, judge, profile_settings("paper").with_overrides({"T": 4, "min_searches": 2}),
                                SamplingSettings(seed=0), StopRule(max_tokens=4)))
    assert isinstance(events[-1], Done)
    assert calls and all(c[0][: len(PROMPT)] == PROMPT for c in calls)  # read after the prompt and answer
    assert eng.embed_calls == before  # the engine embedded nothing itself


def test_with_opening_pick_first_the_first_acceptable_opening_is_kept_over_a_better_judged_one():
    # P(unsafe) 0.52: a " Sure" opening scores 1 - 2 * 0.52 * 0.9 = 0.06 (accepted), a refusal 0.9
    first = LATENT.with_overrides({"opening_drafts": 4, "first_draft_tokens": 2, "opening_pick": "first"})
    best = first.with_overrides({"opening_pick": "best"})
    _, judge, events = latent_answer(0.52, first, temp=1.0, seed=1)
    _, judge_b, events_b = latent_answer(0.52, best, temp=1.0, seed=1)
    kept = of(events, Check)[0]
    assert kept.verdict == "accept" and "Sure" in kept.text  # the sampler's first opening, accepted
    assert judge.tokens[0] == judge_b.tokens[0]  # both judged the same first opening ...
    assert len(judge.tokens[0]) <= 2 and events[-1].text.startswith(kept.text)
    assert "Sorry" in of(events_b, Check)[0].text  # ... which "best" passed over for the refusal


def test_an_answer_the_judge_never_objects_to_is_plain_decodings_answer_token_for_token():
    # P(unsafe) 0.52: every opening is checked and accepted (" Sure" 0.06, a refusal 0.9); the openings
    # beyond the first draw from a stream of their own, so the kept first opening and every clause after
    # it are what vanilla decoding samples with the same seed
    from rainlocal.search.vanilla import vanilla_generate

    settings = LATENT.with_overrides({"opening_drafts": 4, "first_draft_tokens": 2, "opening_pick": "first"})
    for seed in range(12):
        _, judge, events = latent_answer(0.52, settings, temp=1.0, seed=seed)
        assert len(judge.tokens) > 1 and all(c.verdict == "accept" for c in of(events, Check))
        plain = list(vanilla_generate(engine(), PROMPT, SamplingSettings(temp=1.0, seed=seed), StopRule(max_tokens=32)))
        assert events[-1].tokens == plain[-1].tokens, seed


def test_with_opening_pick_first_the_first_opening_is_drafted_alone_and_the_others_only_after_it_is_rejected():
    # Decoded in a batch beside other openings, a real model's KV cells for the first opening differ from plain
    # decoding's in the last bits, and the sampled text drifts from some later token on (seen on HH: answers the
    # judge never objected to, yet not vanilla's). Drafted alone, it is decoded exactly as plain decoding.
    settings = LATENT.with_overrides({"opening_drafts": 4, "first_draft_tokens": 2, "opening_pick": "first"})
    eng, _, events = latent_answer(0.52, settings, temp=1.0, seed=1)  # " Sure" accepted
    assert of(events, Check)[0].verdict == "accept" and events[-1].stats["openings"] == 1
    assert eng.calls["draft"] == eng.seqs["draft"]  # every draft decode held one sequence
    eng, _, events = latent_answer(0.9, settings, temp=1.0, seed=1)  # " Sure" rejected: three more, side by side
    assert events[-1].stats["openings"] >= 2 and eng.seqs["draft"] > eng.calls["draft"]


def test_with_opening_pick_first_a_rejected_first_opening_still_gives_way_to_the_best():
    settings = LATENT.with_overrides({"opening_drafts": 4, "first_draft_tokens": 2, "opening_pick": "first"})
    _, judge, events = latent_answer(0.9, settings, temp=1.0, seed=1)  # " Sure" scores -0.62: rejected
    assert "Sorry" in of(events, Check)[0].text and events[-1].text.startswith(" Sorry")


#: After an accepted " Sure;", every continuation the model can offer (" here ..." or " Paris ...") is bad, and
#: the model never stops on its own (after "." it goes on: " here is the recipe. Paris nice. here ...").
ONLY_THE_OPENING = [("here", -0.8), ("Paris", -0.8), ("Sure", 0.9)]
TALKATIVE = {**TABLE, ".": {" here": 0.5, " Paris": 0.5}}


def talk(evaluator, settings: RainSettings, max_tokens: int = 64):
    eng = bigram_engine(VOCAB, TALKATIVE, prompt_len=len(PROMPT), default={".": 1})
    events = list(fast_generate(eng, PROMPT, evaluator, settings, SamplingSettings(temp=0, seed=0),
                                StopRule(max_tokens=max_tokens)))
    assert isinstance(events[-1], Done)
    return events


def test_the_answer_ends_when_search_after_search_finds_nothing_acceptable():
    ev = talk(ScoreBy(ONLY_THE_OPENING), RAW)
    done = ev[-1]
    assert done.stop_reason == "judge"
    assert done.stats["failed_searches"] == RAW.max_failed_searches == 2
    assert done.stats["search_phases"] == 2
    assert done.text.startswith(" Sure;") and len(done.tokens) < 64


def test_without_the_failure_limit_the_searches_go_on_to_the_end():
    done = talk(ScoreBy(ONLY_THE_OPENING), RAW.with_overrides({"max_failed_searches": 0}))[-1]
    assert done.stop_reason == "length"
    assert done.stats["search_phases"] > 2


def test_a_search_that_finds_an_acceptable_continuation_is_not_a_failure():
    done = answer(KeywordEvaluator(bad=["Sure"]))[-1]
    assert done.stop_reason == "eos" and done.stats["search_phases"] == 1
    assert done.stats["failed_searches"] == 0
