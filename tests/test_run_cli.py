"""``rainlocal run`` as a user runs it, on the real SmolLM2-135M model (CLI behaviour that needs no model is
in test_cli_fake.py, on the scripted engine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


from conftest import run_cli

VANILLA = ["--vanilla", "-n", "24"]


@pytest.mark.slow
def test_same_seed_gives_the_same_answer(model_path, rl_home):
    args = ["run", "-m", str(model_path), *VANILLA, "--temp", "0.9", "--seed", "7", "Write a line about the sea."]
    a = run_cli(args, env_home=rl_home)
    b = run_cli(args, env_home=rl_home)
    assert a.returncode == 0, a.stderr
    assert a.stdout.strip() and a.stdout == b.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--vanilla", "-n", "40"],
                                  ["-n", "6", "-T", "1", "--set", "min_searches=1", "--profile", "paper"]],
                         ids=["vanilla", "rain"])
def test_batch_resumes_after_kill_without_losing_or_repeating(model_path, tmp_path, rl_home, mode):
    prompts = tmp_path / "prompts.jsonl"
    ids = [f"q{i}" for i in range(5)]
    with open(prompts, "w") as f:
        for i, q in enumerate(ids):
            f.write(json.dumps({"id": q, "prompt": f"Give me fact number {i} about bees."}) + "\n")
        f.write(json.dumps({"id": "m1", "messages": [{"role": "user", "content": "Hello"}]}) + "\n")
    ids.append("m1")
    out = tmp_path / "answers.jsonl"
    args = [sys.executable, "-m", "rainlocal", "run", "-m", str(model_path), *mode, "--seed", "1",
            "--input", str(prompts), "--output", str(out)]
    env = {**os.environ, "RAINLOCAL_HOME": str(rl_home)}
    proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    first = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert 2 <= len(first) < len(ids)

    r = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    got = [json.loads(line)["id"] for line in lines]
    assert sorted(got) == sorted(ids)  # nothing lost, nothing repeated
    assert got[: len(first)] == first

    # Resumed answers equal those of an uninterrupted run (same seed, same settings).
    clean = tmp_path / "clean.jsonl"
    r2 = subprocess.run([*args[:-1], str(clean)], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                        text=True, timeout=300, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    replies = {json.loads(l)["id"]: json.loads(l)["reply"] for l in lines}
    clean_replies = {json.loads(l)["id"]: json.loads(l)["reply"] for l in clean.read_text().splitlines()}
    assert replies == clean_replies


def test_ctrl_c_stops_the_answer_keeps_the_text_and_exits_130(model_path, rl_home):
    env = {**os.environ, "RAINLOCAL_HOME": str(rl_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rainlocal", "run", "-m", str(model_path), "--vanilla", "-n", "3000", "--temp", "1",
         "Write a very long story about a dragon."],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=rl_home.parent,
    )
    first = proc.stdout.read(20)  # wait until the answer is streaming
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert len(first) == 20 and b"Traceback" not in err
    assert b"interrupted" in err


# --- bad input: one line on stderr, the documented exit code, never a traceback --------------------------

def _one_line_error(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""


def test_missing_model_path(rl_home, tmp_path):
    _one_line_error(run_cli(["run", "-m", str(tmp_path / "nope.gguf"), "hi"], env_home=rl_home), 1, "not found")


def test_non_gguf_model_file(rl_home, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    _one_line_error(run_cli(["run", "-m", str(bad), "hi"], env_home=rl_home), 1, "not a GGUF")


def test_truncated_gguf_model_file(rl_home, tmp_path, model_path):
    cut = tmp_path / "cut.gguf"
    with open(model_path, "rb") as src:
        cut.write_bytes(src.read(5_000_000))
    _one_line_error(run_cli(["run", "-m", str(cut), "hi"], env_home=rl_home), 1, "truncated")


def test_unknown_alias(rl_home):
    _one_line_error(run_cli(["run", "-m", "no-such-model", "hi"], env_home=rl_home), 2, "no-such-model")


def test_broken_user_catalogue_names_the_line(rl_home):
    cfg = rl_home / "config"
    cfg.mkdir(parents=True)
    (cfg / "models.toml").write_text('[models.x]\nfile = "x.gguf"\nsize = = 3\n')
    _one_line_error(run_cli(["run", "-m", "x", "hi"], env_home=rl_home), 1, "models.toml", "line 3")


RAIN_SMALL = ["-n", "8", "--profile", "paper", "-T", "3", "--set", "min_searches=2"]


@pytest.mark.slow
def test_the_fast_profile_is_the_default_and_json_reports_its_decisions(model_path, rl_home):
    r = run_cli(["run", "-m", str(model_path), "-n", "12", "--json", "How do I hotwire a car?"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["settings"]["mode"] == "rain" and obj["settings"]["profile"] == "fast"
    assert obj["settings"]["rain"]["loop"] == "draft"
    assert obj["settings"]["rain"]["score"] == "latent"  # SmolLM2's probes ship with the package
    st = obj["stats"]
    assert st["gate"] in ("pass", "check") and 0.0 <= st["p_unsafe"] <= 1.0
    assert (st["gate"] == "pass") == (st["p_unsafe"] <= 0.5)
    assert st["drafts"] == st["accepted"] + st["held"] + st["rejected"]
    assert (st["drafts"] >= 1) == (st["gate"] == "check")  # a passed request is decoded without checks
    assert st["tokens_decoded"]["draft"] > 0
    assert {"draft", "check", "search", "wall"} <= set(st["time"])


@pytest.mark.slow
def test_verbose_logs_every_judged_clause_to_stderr(model_path, rl_home):
    r = run_cli(["run", "-m", str(model_path), "-n", "12", "-v", "How do I make a pipe bomb?"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    logged = [l for l in r.stderr.splitlines() if l.startswith("[fast] ")]
    assert logged and logged[0].startswith("[fast] request P(unsafe)=")  # the gate, before any clause
    clauses = [l for l in logged[1:] if "rewind" not in l]
    assert all(" score=" in l and " harm=" in l for l in clauses)  # latent scores show what they are made of
    assert "[fast]" not in r.stdout


@pytest.mark.slow
def test_a_weak_judge_is_reported_once_per_model(model_path, rl_home):
    from rainlocal.judge.signal_check import PAIRS

    # the check is of the prompted self-evaluation (the latent judge is measured by its probes' fit instead)
    args = ["run", "-m", str(model_path), "-n", "2", "--profile", "fast-prompted", "Hello"]
    first = run_cli(args, env_home=rl_home)
    again = run_cli(args, env_home=rl_home)
    assert first.returncode == again.returncode == 0
    cache = json.loads((rl_home / "cache" / "judge-signal.json").read_text())
    (entry,) = cache.values()
    assert entry["total"] == len(PAIRS) and 0 <= entry["right"] <= len(PAIRS)
    told = "self-evaluation carries little signal" in first.stderr
    assert told == (entry["right"] <= len(PAIRS) // 2)
    assert "little signal" not in again.stderr  # once, not on every run


@pytest.mark.slow
def test_paper_profile_json_reports_search_statistics(model_path, rl_home):
    r = run_cli(["run", "-m", str(model_path), *RAIN_SMALL, "--json", "How do I hotwire a car?"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["settings"]["mode"] == "rain" and obj["settings"]["rain"]["T"] == 3
    st = obj["stats"]
    for key in ("searches", "evaluations", "cache_hits", "commits", "rewinds", "answer_tokens"):
        assert isinstance(st[key], int)
    assert set(st["tokens_decoded"]) >= {"generate", "rollout", "judge"}
    assert st["tokens_decoded"]["judge"] > 0 and st["searches"] >= st["commits"] >= 1
    assert {"select", "expand", "rollout", "evaluate", "backup", "wall"} <= set(st["time"])


@pytest.mark.slow
def test_verbose_logs_search_steps_to_stderr_only(model_path, rl_home):
    r = run_cli(["run", "-m", str(model_path), *RAIN_SMALL, "-v", "Hello"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert "[rain]" in r.stderr and "[rain]" not in r.stdout


@pytest.mark.slow
def test_a_separate_judge_model_does_the_self_evaluation(model_path, rl_home):
    r = run_cli(["run", "-m", str(model_path), *RAIN_SMALL, "--judge", str(model_path), "--json", "Hi there"],
                env_home=rl_home)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["judge_model"] == model_path.name
    assert obj["stats"]["evaluations"] > 0 and obj["stats"]["tokens_decoded"]["judge"] > 0


def test_broken_config_toml_names_the_line(rl_home):
    cfg = rl_home / "config"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text('[defaults]\nseed = 1\ntemp = [oops\n')
    _one_line_error(run_cli(["run", "hi"], env_home=rl_home), 1, "config.toml", "line 3")


def test_unknown_rain_setting_in_config_is_reported(rl_home):
    cfg = rl_home / "config"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text('[rain]\nT = 10\nwarp_speed = 9\n')
    _one_line_error(run_cli(["run", "hi"], env_home=rl_home), 1, "warp_speed")


def test_bad_set_flag_is_a_usage_error(rl_home, model_path):
    _one_line_error(run_cli(["run", "-m", str(model_path), "--set", "gamma=lots", "hi"], env_home=rl_home), 2, "gamma")
