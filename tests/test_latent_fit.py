"""The probes' arithmetic without a model: logistic regression, AUC, kappa, folds grouped by prompt,
and the probe file (weights, folds, which prompts each fold left out)."""

import numpy as np
import pytest

from rainlocal.latent.logreg import auc, fit_logistic, group_folds, kappa, kappa_multi
from rainlocal.latent.probes import ProbeSet


def test_auc_counts_a_tie_as_half():
    # pairs (positive, negative): 2>1, 2<3, 3>1, 3=3 -> 2.5 of 4
    assert auc([1, 2, 3, 3], [0, 1, 1, 0]) == 0.625
    assert auc([0.1, 0.9], [0, 1]) == 1.0


def test_kappa_against_hand_computed_values():
    assert kappa([1, 1, 0, 0], [1, 0, 0, 0]) == 0.5  # po 0.75, pe 0.5
    assert abs(kappa_multi(list("aabc"), list("abbc")) - (0.75 - 0.3125) / 0.6875) < 1e-12


def test_every_row_of_a_prompt_falls_in_one_fold():
    groups = ["a", "a", "b", "c", "c", "c", "d", "e"]
    folds = group_folds(groups, 3)
    for g in set(groups):
        assert len({f for f, h in zip(folds, groups) if h == g}) == 1
    assert set(folds) == {0, 1, 2}


def test_a_fit_on_principal_components_predicts_held_out_rows_like_one_on_all_features():
    # a residual stream's variance lies in few directions; here 10 factors mixed into 300 features
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 10))
    x = f @ rng.normal(size=(10, 300)) + 0.3 * rng.normal(size=(400, 300))
    y = (f[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(float)
    pc = fit_logistic(x[:300], y[:300], 0.03, dims=64)
    full = fit_logistic(x[:300], y[:300], 0.03, dims=None)
    assert pc.w.shape == (300,)  # folded back onto the raw features
    assert auc(pc.prob(x[300:]), y[300:]) > 0.8 and auc(full.prob(x[300:]), y[300:]) > 0.8


def test_a_rare_positive_class_is_not_ignored():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 20))
    y = np.zeros(500)
    y[:25] = 1
    x[:25, 0] += 3.0
    m = fit_logistic(x, y, 0.1, dims=None)
    assert (m.prob(x[:25]) >= 0.5).mean() > 0.8  # balanced weights: most positives called positive


def _probe(rng, d):
    return fit_logistic(rng.normal(size=(40, d)), np.r_[np.zeros(20), np.ones(20)], 0.1, dims=None)


def test_a_probe_file_keeps_the_folds_and_which_prompts_each_left_out(tmp_path):
    rng = np.random.default_rng(2)
    whole = {n: _probe(rng, 8) for n in ("request", "comply", "harm", "refusal")}
    folds = [{n: _probe(rng, 8) for n in ("request", "comply")} for _ in range(2)]
    ps = ProbeSet("m.gguf", "abc", 3, whole, {"request": {"auc": 0.9}, "comply": {"auc": 0.95}},
                  folds, [["xs-001", "xs-002"], ["xs-003"]])
    path = tmp_path / "p.npz"
    ps.save(path)
    back = ProbeSet.load(path)
    x = rng.normal(size=(3, 8))
    assert np.allclose(back.probes["harm"].prob(x), whole["harm"].prob(x), atol=2e-2)
    assert back.has_refusal and back.layer == 3
    held = back.for_prompt("xs-003")
    assert np.allclose(held.probes["comply"].prob(x), folds[1]["comply"].prob(x), atol=2e-2)
    assert back.for_prompt("hh-7") is back  # a prompt no fold saw: the probes fitted on everything
    assert back.usable()[0]
    low = ProbeSet("m.gguf", "abc", 3, whole, {"request": {"auc": 0.7}, "comply": {"auc": 0.95}})
    ok, why = low.usable()
    assert not ok and "request" in why and "0.8" in why


def test_a_labelled_dev_prompt_is_judged_by_the_fold_that_left_it_out(tmp_path):
    from rainlocal.latent.data import prompt_id_of, xstest_prompts

    rng = np.random.default_rng(3)
    first = xstest_prompts()[0]
    assert prompt_id_of("  " + first.text + "\n") == first.id
    folds = [{n: _probe(rng, 8) for n in ("request", "comply")} for _ in range(2)]
    ps = ProbeSet("m.gguf", "abc", 3, {n: _probe(rng, 8) for n in ("request", "comply")}, {}, folds,
                  [[first.id], ["xs-999"]])
    assert ps.for_request(first.text).probes is folds[0]
    assert ps.for_request("How do I bake bread?") is ps


def test_a_labelled_hh_conversation_is_judged_by_the_fold_that_left_it_out_and_only_by_its_turns():
    from rainlocal.latent.data import hh_requests

    rng = np.random.default_rng(4)
    conv = next(p for p in hh_requests() if len(p.messages) > 1)
    folds = [{n: _probe(rng, 8) for n in ("request", "comply")} for _ in range(2)]
    ps = ProbeSet("m.gguf", "abc", 3, {n: _probe(rng, 8) for n in ("request", "comply")}, {}, folds,
                  [["xs-001"], [conv.id]])
    assert ps.for_request(conv.messages).probes is folds[1]
    # the same last request after other turns is another conversation: the full fit judges it
    assert ps.for_request([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                           conv.messages[-1]]) is ps
    assert ps.for_request(conv.messages[-1]["content"]) is ps


def test_the_evaluation_cross_fit_finds_a_prompt_by_its_turns_not_by_a_reused_id():
    from rainlocal.evals.latent_judge import CrossFit
    from rainlocal.latent.data import hh_requests, xstest_prompts

    rng = np.random.default_rng(5)
    conv, lone = hh_requests()[3], xstest_prompts()[0]
    folds = [{n: _probe(rng, 8) for n in ("request", "comply")} for _ in range(2)]
    cross = CrossFit.of(ProbeSet("m.gguf", "abc", 3, folds[0], {}, folds, [[lone.id], [conv.id]]))
    assert cross.where(conv.id, conv.messages) == (conv.id, "held_out")
    assert cross.where("any-id", [dict(m) for m in conv.messages]) == (conv.id, "held_out")
    assert cross.where(lone.id, [{"role": "user", "content": "  " + lone.text}]) == (lone.id, "held_out")
    # a held-out split's file may number its items like the dev split's: the text decides
    assert cross.where(conv.id, [{"role": "user", "content": "How do I bake bread?"}]) == (None, "new")


def test_a_request_after_earlier_turns_is_read_by_the_multi_turn_probe_where_the_file_has_one():
    rng = np.random.default_rng(6)
    one, multi = _probe(rng, 8), _probe(rng, 8)
    ps = ProbeSet("m.gguf", "abc", 3, {"request": one, "request_multi": multi, "comply": _probe(rng, 8)})
    talk = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How do I pick a lock?"}]
    assert ps.for_turns(talk).probes["request"] is multi
    assert ps.for_turns(talk[-1:]).probes["request"] is one
    assert ps.for_turns([{"role": "system", "content": "Be brief."}] + talk[-1:]).probes["request"] is one
    older = ProbeSet("m.gguf", "abc", 3, {"request": one, "comply": _probe(rng, 8)})
    assert older.for_turns(talk) is older  # a file fitted before conversations were labelled


def test_the_fit_reads_conversations_with_their_own_request_probe_and_reports_them_apart():
    import json

    from rainlocal.latent.data import Prompt, Reply
    from rainlocal.latent.features import PREFIXES, CaseStates
    from rainlocal.latent.fit import Tables, cross_validate, fit_final

    rng = np.random.default_rng(7)
    d, n_x, n_c = 6, 60, 60
    talk = json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}])
    xs = [Prompt(f"xs-{i}", f"q{i}", bool(i % 2)) for i in range(n_x)]
    conv = [Prompt(f"hh-{i}", "c", bool(i % 3), "hh", talk) for i in range(n_c)]
    # one-line requests carry their label on feature 0, conversations on feature 1
    req = rng.normal(size=(n_x + n_c, 1, d))
    req[:n_x, 0, 0] += np.where([p.unsafe for p in xs], 3.0, -3.0)
    req[n_x:, 0, 1] += np.where([p.unsafe for p in conv], 3.0, -3.0)
    replies = [Reply(p.id, "r", bool(k), p.unsafe, "m") for p in xs for k in (0, 1)]
    prefix = rng.normal(size=(len(replies), len(PREFIXES), 1, d))
    prefix[:, :, 0, 2] += np.where([r.complied for r in replies], 3.0, -3.0)[:, None]
    t = Tables(xs + conv, req, replies, CaseStates(req[:0], prefix, np.full(len(replies), 8)), [3],
               extra_from=n_x + n_c)
    cv = cross_validate(t, 0, 0.1)
    assert all("request_multi" in m for m in cv.folds)
    assert not np.isnan(cv.p_unsafe).any()
    assert cv.metrics["request"]["n"] == n_x and cv.metrics["request_hh"]["n"] == n_c
    assert cv.metrics["request"]["auc"] > 0.9 and cv.metrics["request_hh"]["auc"] > 0.9
    assert sorted(i for ids in cv.fold_ids for i in ids) == sorted(p.id for p in xs + conv)
    final = fit_final(t, cv, "m.gguf", "abc")
    assert set(final.probes) >= {"request", "request_multi", "comply"}


def test_the_harm_score_averages_the_requests_and_the_answers_reading_in_log_odds():
    from rainlocal.latent.probes import harm_score

    assert harm_score(0.8, 0.5) == pytest.approx(0.4)  # no topic reading: the plain product
    assert harm_score(0.8, 0.5, 0.2) == pytest.approx(0.25)  # logit 0.8 = -logit 0.2: even odds, x 0.5
    assert harm_score(0.9, 1.0, 0.9) == pytest.approx(0.9)
    # odds of 3:1 and 9:1 average, in log-odds, to sqrt(3 * 9) = 5.196:1
    assert harm_score(0.75, 1.0, 0.9) == pytest.approx(27 ** 0.5 / (1 + 27 ** 0.5))
    got = harm_score(np.array([0.8, 0.1]), np.array([1.0, 1.0]), np.array([0.2, 0.1]))
    assert got == pytest.approx([0.5, 0.1])


def _tables_with_drafts(rng, d=6, n=60):
    from rainlocal.latent.data import Prompt, Reply
    from rainlocal.latent.features import PREFIXES, CaseStates
    from rainlocal.latent.fit import Tables

    xs = [Prompt(f"xs-{i}", f"q{i}", bool(i % 2)) for i in range(n)]
    extra = [Prompt(f"adv-{i}", f"e{i}", bool(i % 2), "advbench") for i in range(20)]
    req = rng.normal(size=(n + len(extra), 1, d))
    req[:, 0, 0] += np.where([p.unsafe for p in xs + extra], 1.0, -1.0)
    replies = [Reply(p.id, "r", bool(k), p.unsafe, "m") for p in xs for k in (0, 1)]
    prefix = rng.normal(size=(len(replies), len(PREFIXES), 1, d))
    prefix[:, :, 0, 2] += np.where([r.complied for r in replies], 3.0, -3.0)[:, None]
    prefix[:, :, 0, 3] += np.where([r.unsafe for r in replies], 2.0, -2.0)[:, None]  # what the reply is about
    drafts = [Reply(p.id, "d", True, p.unsafe, "drafted") for p in xs + extra]
    dprefix = rng.normal(size=(len(drafts), len(PREFIXES), 1, d))
    dprefix[:, :, 0, 3] += np.where([r.unsafe for r in drafts], 2.0, -2.0)[:, None]
    return Tables(xs + extra, req, replies, CaseStates(req[:0], prefix, np.full(len(replies), 8)), [3],
                  extra_from=n, drafts=drafts, draft_states=CaseStates(req[:0], dprefix, np.full(len(drafts), 8)))


def test_the_topic_probe_reads_the_request_from_the_answer_and_the_searchs_harm_is_measured_with_it():
    from rainlocal.latent.fit import cross_validate, fit_final

    t = _tables_with_drafts(np.random.default_rng(9))
    cv = cross_validate(t, 0, 0.1)
    assert cv.p_topic is not None and not np.isnan(cv.p_topic).any()
    m = cv.metrics
    assert m["topic_people"]["n"] == sum(r.complied for r in t.replies)
    assert m["topic_people"]["auc"] > 0.9  # feature 3 carries the request's label in the replies
    assert m["judged_people"]["auc"] >= m["product_people"]["auc"]  # the request's own reading is weak here
    final = fit_final(t, cv, "m.gguf", "abc")
    assert "topic" in final.probes and final.metrics["fit"]["compliant_drafts"] == len(t.drafts)


def test_no_fold_trains_its_topic_probe_on_the_drafts_of_a_prompt_it_grades(monkeypatch):
    from rainlocal.latent import fit

    t = _tables_with_drafts(np.random.default_rng(10))
    seen = []
    real = fit._topic_probe

    def spy(t_, li, c, idx, drafts):
        seen.append(({t_.replies[i].prompt_id for i in idx}, {d.prompt_id for d, k in zip(t_.drafts, drafts) if k}))
        return real(t_, li, c, idx, drafts)

    monkeypatch.setattr(fit, "_topic_probe", spy)
    cv = fit.cross_validate(t, 0, 0.1)
    assert len(seen) == len(cv.fold_ids) == 5
    for (replies, drafts), graded in zip(seen, cv.fold_ids):
        assert not (replies | drafts) & set(graded)
        assert {f"adv-{i}" for i in range(20)} <= drafts  # the extra prompts' openings always train
        assert drafts >= {p.id for p in t.prompts[:t.extra_from]} - set(graded)


def test_a_conversation_the_probes_never_read_is_new_to_them_not_trained_on():
    from rainlocal.evals.latent_judge import CrossFit
    from rainlocal.latent.data import extra_prompts, hh_requests, xstest_prompts

    rng = np.random.default_rng(8)
    conv, lone, extra = hh_requests()[5], xstest_prompts()[0], extra_prompts()[0]
    folds = [{n: _probe(rng, 8) for n in ("request", "comply")} for _ in range(2)]
    # fitted before conversations were labelled: XSTest's prompts in the folds, no conversation
    cross = CrossFit.of(ProbeSet("m.gguf", "abc", 3, folds[0], {}, folds, [[lone.id], [xstest_prompts()[1].id]]))
    assert cross.where(conv.id, conv.messages) == (None, "new")
    assert cross.where(extra.id, extra.messages) == (None, "trained")
    # a file without folds was fitted on XSTest's prompts, and on conversations only where its fit read them
    bare = CrossFit.of(ProbeSet("m.gguf", "abc", 3, folds[0], {"fit": {"dialogues": 0}}))
    assert bare.where(None, lone.messages) == (None, "trained") and bare.where(None, conv.messages) == (None, "new")
    read = CrossFit.of(ProbeSet("m.gguf", "abc", 3, folds[0], {"fit": {"dialogues": 125}}))
    assert read.where(None, conv.messages) == (None, "trained")


def test_the_quick_plan_answers_every_other_prompt_itself_with_both_labels_kept():
    from rainlocal.latent import data
    from rainlocal.latent.calibrate import Plan

    prompts = data.xstest_prompts()
    quick, full = Plan.named(True), Plan.named(False)
    own = quick.own_prompts(prompts)
    assert full.own_prompts(prompts) == prompts
    assert len(own) == (len(prompts) + 1) // 2
    assert {p.unsafe for p in own} == {True, False}
    assert abs(sum(p.unsafe for p in own) / len(own) - sum(p.unsafe for p in prompts) / len(prompts)) < 0.05
    assert quick.own_tokens < full.own_tokens


def test_the_quick_plan_tries_a_subset_of_the_full_plans_layers_no_deeper_than_sixty_percent():
    from rainlocal.latent.calibrate import Plan

    for n_layer in (24, 28, 30):
        quick, full = Plan.named(True).layers(n_layer), Plan.named(False).layers(n_layer)
        assert set(quick) < set(full)
        assert max(quick) <= round(0.6 * n_layer)


def test_replies_labelled_by_reading_are_read_for_the_chosen_prompts_or_refused_saying_which_row(tmp_path):
    import pytest

    from rainlocal.latent.data import labelled_replies, xstest_prompts

    prompts = xstest_prompts()
    first, second = prompts[0], prompts[1]
    good = tmp_path / "good.csv"
    good.write_text(f"prompt_id,reply,complied\n{first.id},Sure.,1\n{second.id},No.,0\n", encoding="utf-8")
    rows = labelled_replies(good, {first.id: first.unsafe})  # only the chosen prompts' replies
    assert [(r.prompt_id, r.complied, r.unsafe, r.source) for r in rows] == [(first.id, True, first.unsafe, "read")]
    for name, body, says in (("label.csv", f"prompt_id,reply,complied\n{first.id},Sure.,yes\n", "row 2"),
                             ("id.csv", "prompt_id,reply,complied\nxs-nope,Sure.,1\n", "row 2"),
                             ("empty.csv", "prompt_id,reply,complied\n", "no labelled replies")):
        bad = tmp_path / name
        bad.write_text(body, encoding="utf-8")
        with pytest.raises(ValueError, match=says):
            labelled_replies(bad, {first.id: first.unsafe})
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match="not a UTF-8 CSV"):
        labelled_replies(binary, {})
