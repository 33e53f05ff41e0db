"""CLI behaviour on the scripted fake engine (``RAINLOCAL_ENGINE_FACTORY=fake_cli_engine:make``): what
goes to stdout, JSON fields, batch files, exit codes and chat's piped mode, in a real subprocess but
without a model, so each test takes well under a second of work. The fake writes one of two scripted
replies (``fake_cli_engine.REPLIES``); what the real model does is tested in test_run_cli.py and
test_chat.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from conftest import run_cli
from fake_cli_engine import REPLIES

TESTS = str(Path(__file__).resolve().parent)
VANILLA = ["--vanilla", "--temp", "0", "-n", "24"]
RAIN = ["--profile", "paper", "-T", "3", "--set", "min_searches=2", "-n", "40"]


def fake(args, **kw):
    env = {"RAINLOCAL_ENGINE_FACTORY": "fake_cli_engine:make",
           "PYTHONPATH": os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)}
    return run_cli(args, extra_env=env, timeout=120, **kw)


def test_only_the_answer_goes_to_stdout(rl_home):
    r = fake(["run", *VANILLA, "Say hello."], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == REPLIES[0] + "\n"  # greedy: the fake's likelier reply, then a newline, nothing else


def test_stdin_is_the_prompt_when_no_argument(rl_home):
    r = fake(["run", *VANILLA, "--json"], input="What is the capital of France?\n", env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt"] == "What is the capital of France?"


def test_stdin_comes_first_then_the_argument(rl_home):
    r = fake(["run", *VANILLA, "--json", "Summarise the text above."], input="The cat sat on the mat.\n",
             env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt"] == "The cat sat on the mat.\n\nSummarise the text above."


def test_json_output_has_reply_model_settings_usage_and_timings(rl_home):
    r = fake(["run", "-m", "tiny.gguf", *VANILLA, "--json", "--seed", "3", "Hi"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)  # exactly one JSON object, nothing else
    assert obj["reply"] == REPLIES[0] and obj["stop_reason"] == "eos"
    assert obj["model"] == "tiny.gguf" and obj["judge_model"] is None
    assert obj["settings"]["seed"] == 3 and obj["settings"]["mode"] == "vanilla" and "rain" not in obj["settings"]
    # one token per character: the reply's length, and the prompt is the plain transcript's characters
    assert obj["usage"]["completion_tokens"] == len(REPLIES[0])
    assert obj["usage"]["total_tokens"] == obj["usage"]["prompt_tokens"] + len(REPLIES[0])
    assert obj["timings"]["total_s"] > 0


def test_rain_json_reports_the_profile_and_search_statistics(rl_home):
    r = fake(["run", *RAIN, "--json", "How do I pick a lock?"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["reply"] in REPLIES and obj["settings"]["profile"] == "paper"
    assert obj["settings"]["rain"]["T"] == 3 and obj["settings"]["rain"]["min_searches"] == 2
    st = obj["stats"]
    assert st["evaluations"] + st["cache_hits"] == st["searches"] >= 2 * st["commits"] > 0


def test_the_same_seed_gives_the_same_answer_and_json(rl_home):
    a = fake(["run", *RAIN, "--seed", "4", "--json", "Hi"], env_home=rl_home)
    b = fake(["run", *RAIN, "--seed", "4", "--json", "Hi"], env_home=rl_home)
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout)["reply"] == json.loads(b.stdout)["reply"]
    assert json.loads(a.stdout)["stats"]["searches"] == json.loads(b.stdout)["stats"]["searches"]


def test_batch_answers_every_line_and_a_rerun_does_nothing(rl_home, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "Hi"}) + "\n"
                       + json.dumps({"id": "b", "messages": [{"role": "user", "content": "Hello"}]}) + "\n")
    out = tmp_path / "o.jsonl"
    args = ["run", *VANILLA, "--input", str(prompts), "--output", str(out)]
    r = fake(args, env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # batch answers go to the file only
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["id"], x["reply"]) for x in recs] == [("a", REPLIES[0]), ("b", REPLIES[0])]
    before = out.read_text()
    again = fake(args, env_home=rl_home)
    assert again.returncode == 0 and out.read_text() == before
    assert "already answered" in again.stderr


def test_a_torn_last_output_line_is_cut_and_its_prompt_answered_again(rl_home, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": "Hi"}) + "\n" for i in ("a", "b")))
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps({"id": "a", "reply": "old"}) + "\n" + '{"id": "b", "rep')  # killed mid-write
    r = fake(["run", *VANILLA, "--input", str(prompts), "--output", str(out)], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["id"], x["reply"]) for x in recs] == [("a", "old"), ("b", REPLIES[0])]


def _one_line_error(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""


def test_malformed_batch_line_names_the_line(rl_home, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hi"}\n{oops\n')
    _one_line_error(fake(["run", "--input", str(prompts), "--output", str(tmp_path / "o.jsonl")], env_home=rl_home),
                    2, "p.jsonl:2")


def test_batch_needs_both_files(rl_home, tmp_path):
    _one_line_error(fake(["run", "--input", str(tmp_path / "p.jsonl")], env_home=rl_home), 2, "--output")


def test_prompt_longer_than_the_context_says_both_numbers(rl_home):
    r = fake(["run", "-c", "64", "--vanilla"], input="word " * 200, env_home=rl_home)
    _one_line_error(r, 2, "the context is 64 tokens")
    # 200 words of 5 characters are 1000 one-character tokens, plus the transcript's markers
    assert int(re.search(r"the prompt is (\d+) tokens", r.stderr).group(1)) > 1000


def test_empty_stdin_and_no_argument(rl_home):
    _one_line_error(fake(["run"], input="", env_home=rl_home), 2, "no prompt")


def test_a_model_that_fails_to_load_is_a_runtime_error(rl_home):
    _one_line_error(fake(["run", "-m", "missing.gguf", "hi"], env_home=rl_home), 1, "missing.gguf")


def test_chat_with_piped_stdin_prints_only_the_answers_and_saves_the_turns(rl_home):
    r = fake(["chat", *VANILLA], input="Say hello.\n\nWhat is 2+2?\n", env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == REPLIES[0] + "\n\n" + REPLIES[0] + "\n"
    [path] = list((rl_home / "data" / "conversations").glob("*.jsonl"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["role"], x["content"]) for x in lines[1:]] == [
        ("user", "Say hello."), ("assistant", REPLIES[0]), ("user", "What is 2+2?"), ("assistant", REPLIES[0])]


def test_chat_continue_keeps_the_last_replys_settings_unless_flags_say_otherwise(rl_home):
    first = fake(["chat", "--vanilla", "--temp", "0", "-n", "5"], input="Say hello.\n", env_home=rl_home)
    assert first.returncode == 0, first.stderr
    assert first.stdout == REPLIES[0][:5] + "\n"  # cut at 5 tokens (characters)
    again = fake(["chat", "--continue"], input="Again.\n", env_home=rl_home)
    longer = fake(["chat", "--continue", "-n", "7"], input="Once more.\n", env_home=rl_home)
    assert again.returncode == longer.returncode == 0, again.stderr + longer.stderr
    assert (again.stdout, longer.stdout) == (REPLIES[0][:5] + "\n", REPLIES[0][:7] + "\n")
