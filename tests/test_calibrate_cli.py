"""`rainlocal calibrate` end to end on the real SmolLM2 model: it fits, reports the cross-validated
measures, writes a probe file that loads, and says what it found when probes already exist."""

import json

import pytest

try:
    from tests.conftest import run_cli
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from conftest import run_cli


@pytest.mark.slow
def test_calibrate_fits_reports_and_writes_probes_that_load(model_path, tmp_path):
    from rainlocal.latent.probes import ProbeSet

    out = tmp_path / "probes.npz"
    r = run_cli(["calibrate", "-m", str(model_path), "--limit", "40", "-o", str(out), "--json"],
                env_home=tmp_path / "home", timeout=900)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    m = report["metrics"]
    for key in ("request", "request_hh", "comply_people", "product_people", "comply_own"):
        assert 0.0 <= m[key]["auc"] <= 1.0 and m[key]["n"] > 0
    assert m["fit"]["own_labels"] == "read"  # a catalogue model: its own replies' shipped reading labels are found
    # the topic probe: fitted on compliant replies and the shipped compliant openings, measured on compliant
    # replies, and the harm the search scores measured beside the plain product
    assert m["fit"]["compliant_drafts"] > 0
    for key in ("topic_people", "judged_people", "judged_own"):
        assert 0.0 <= m[key]["auc"] <= 1.0 and m[key]["n"] > 0
    assert m["judged_people"]["n"] == m["product_people"]["n"]
    probes = ProbeSet.load(out)
    assert probes.layer == report["layer"] and set(probes.probes) >= {"request", "comply", "harm", "topic"}
    assert all("topic" in f for f in probes.folds)
    # the 40 XSTest prompts and the HH conversations read are each left out by one fold
    assert m["fit"]["dialogues"] > 0 and m["request_hh"]["n"] == m["fit"]["dialogues"]
    assert len(probes.folds) == 5 and sum(len(ids) for ids in probes.fold_ids) == 40 + m["fit"]["dialogues"]


def test_calibrate_on_a_model_with_shipped_probes_reports_them_without_fitting(model_path, tmp_path):
    r = run_cli(["calibrate", "-m", str(model_path)], env_home=tmp_path / "home", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already fitted" in r.stdout and "AUC" in r.stdout


def test_calibrate_refuses_an_inference_server_in_one_line(tmp_path):
    r = run_cli(["calibrate", "--engine", "http://127.0.0.1:9"], env_home=tmp_path / "home")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "hidden states" in r.stderr


@pytest.mark.slow
def test_replies_labelled_by_reading_are_trained_on_and_measured_apart_from_peoples(model_path, tmp_path):
    import csv

    from rainlocal.latent.calibrate import limited
    from rainlocal.latent.data import own_labels_path, xstest_prompts

    other = own_labels_path("cf6ed2441853b795c408")  # qwen2.5-coder-0.5b's replies, read (not SmolLM2's)
    ids = {p.id for p in limited(xstest_prompts(), 20)}
    rows = [r for r in csv.DictReader(open(other, encoding="utf-8")) if r["prompt_id"] in ids]
    plain = run_cli(["calibrate", "-m", str(model_path), "--limit", "20", "-o", str(tmp_path / "a.npz"), "--json"],
                    env_home=tmp_path / "home", timeout=900)
    more = run_cli(["calibrate", "-m", str(model_path), "--limit", "20", "-o", str(tmp_path / "b.npz"), "--json",
                    "--labelled-replies", str(other)], env_home=tmp_path / "home", timeout=900)
    assert plain.returncode == 0 and more.returncode == 0, (plain.stderr, more.stderr)
    a, b = json.loads(plain.stdout)["metrics"], json.loads(more.stdout)["metrics"]
    assert "product_read" not in a and b["product_read"]["n"] == len(rows) > 0
    assert b["fit"]["labelled_replies"] == {"files": [other.name], "replies": len(rows)}
    assert b["product_people"]["n"] == a["product_people"]["n"]  # people's rows are measured as before
    assert b["comply"]["n"] == a["comply"]["n"] + len(rows)  # ... and the read replies were trained on


def test_a_labels_file_that_is_not_one_is_refused_in_one_line_before_the_model_loads(model_path, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_id,reply,complied\nxs-001,Sure.,maybe\n", encoding="utf-8")
    for option in ("--labelled-replies", "--own-labels"):
        r = run_cli(["calibrate", "-m", str(model_path), option, str(bad)], env_home=tmp_path / "home")
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, option
        assert "bad.csv: row 2" in r.stderr and "Traceback" not in r.stderr, option
