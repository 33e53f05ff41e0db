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
    probes = ProbeSet.load(out)
    assert probes.layer == report["layer"] and set(probes.probes) >= {"request", "comply", "harm"}
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
