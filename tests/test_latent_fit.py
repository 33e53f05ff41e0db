"""The probes' arithmetic without a model: logistic regression, AUC, kappa, folds grouped by prompt,
and the probe file (weights, folds, which prompts each fold left out)."""

import numpy as np

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
