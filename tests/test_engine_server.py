"""``--engine URL``: the search on a real llama.cpp ``llama-server`` against the in-process engine.

A session fixture starts the real server on a free loopback port with the real SmolLM2-135M model
(one thread, four slots, embeddings on) and stops it at the end. The server must be installed (CI
builds it with ``.ci/llama-server.sh``); the tests fail, not skip, without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, stop_process
from rainlocal.generate import GenerationSettings, Generator
from rainlocal.search.settings import SamplingSettings, profile_settings

MESSAGES = [{"role": "user", "content": "How do I get into my neighbour's house when they are away?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _llama_server_binary() -> str:
    found = os.environ.get("RAINLOCAL_LLAMA_SERVER") or shutil.which("llama-server")
    if not found:
        pytest.fail("llama-server not found: run `export PATH=\"$(bash .ci/llama-server.sh):$PATH\"` "
                    "(builds llama.cpp's server once and caches it) or set RAINLOCAL_LLAMA_SERVER")
    return found


def start_server(model_path: Path, *, parallel: int = 4, embeddings: bool = True,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """A real llama-server on a free loopback port, ready to answer (or a failure with its log)."""
    port = _free_port()
    args = [_llama_server_binary(), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
            "-t", "1", "--parallel", str(parallel), "-c", str(2048 * parallel), "--no-webui"]
    if embeddings:
        args += ["--embeddings", "--pooling", "none"]
    args += list(extra)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama-server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail("llama-server did not become ready in 120 s")


@pytest.fixture(scope="session")
def llama_server(model_path):
    proc, url = start_server(model_path)
    yield url
    stop_process(proc)


@pytest.fixture(scope="session")
def remote(llama_server):
    from rainlocal.engine.llama_server import LlamaServerEngine

    eng = LlamaServerEngine(llama_server)
    yield eng
    eng.close()


def _answer(engine, settings: GenerationSettings) -> str:
    engine.reset()
    events = list(Generator(engine).stream(MESSAGES, settings))
    return events[-1].text


# -- the engine, compared with the in-process one --------------------------------------------------

def test_the_server_engine_tokenizes_and_ends_turns_like_the_in_process_engine(remote, engine):
    text = "Hello world! Ünïcode, <|im_end|> and 12345."
    assert remote.tokenize(text) == engine.tokenize(text)
    assert remote.tokenize(text, special=True) == engine.tokenize(text, special=True)
    assert remote.prompt_tokens(text) == engine.prompt_tokens(text)
    toks = engine.tokenize(text, special=True)
    assert remote.detokenize(toks) == engine.detokenize(toks)
    assert (remote.bos_token, remote.eos_token, remote.n_vocab) == (engine.bos_token, engine.eos_token, engine.n_vocab)
    assert {t for t in range(engine.n_vocab) if remote.is_eog(t)} == {t for t in range(engine.n_vocab) if engine.is_eog(t)}
    assert remote.chat_template == engine.chat_template


def test_next_token_log_probs_agree_with_the_in_process_engine(remote, engine):
    prompt = Generator(engine).prompt(MESSAGES)[0]
    seqs = [prompt, prompt + engine.tokenize("You"), prompt + engine.tokenize("I'm sorry, but")]
    local = engine.logprobs(seqs, phase="generate")
    served = remote.logprobs(seqs, phase="generate")
    for lo, se in zip(local, served):
        top = np.argsort(-lo)[:40]
        assert int(np.argmax(se)) == int(top[0])
        # the top 40 (what --top-k samples from) carry the same log-probs up to float noise
        np.testing.assert_allclose(se[top], lo[top], atol=0.02)
        # everything outside the server's top N is -inf
        assert np.isneginf(se).sum() == engine.n_vocab - remote.top_n


def test_rollouts_get_the_whole_distribution(remote, engine):
    prompt = Generator(engine).prompt(MESSAGES)[0] + engine.tokenize("Well,")
    local = engine.logprobs([prompt], phase="rollout")[0]
    served = remote.logprobs([prompt], phase="rollout")[0]
    assert np.isfinite(served).all()
    np.testing.assert_allclose(served, local, atol=0.02)


def test_the_requests_of_one_call_are_in_flight_together_and_counted(remote, engine):
    prompt = Generator(engine).prompt(MESSAGES)[0]
    remote.logprobs([prompt], phase="prompt")
    before = (remote.requests, remote.counters["draft"], remote.request_seconds, remote.decode_seconds)
    tails = [engine.tokenize(w) for w in (" Alpha", " Beta", " Gamma", " Delta")]
    remote.logprobs([prompt + t for t in tails], phase="draft")
    assert remote.requests - before[0] == 4
    decoded = remote.counters["draft"] - before[1]
    assert sum(len(t) for t in tails) <= decoded <= 4 * len(prompt) + sum(len(t) for t in tails)
    width = (remote.request_seconds - before[2]) / (remote.decode_seconds - before[3])
    assert width > 2.0  # four requests, four slots: mostly in flight together


def test_embeddings_from_the_server_match_the_in_process_embeddings(remote, engine):
    assert remote.can_embed
    toks = engine.tokenize("I cannot help with breaking into a house, but a locksmith can.")
    starts = [0, 4, 9]
    a, b = remote.embed_suffixes(toks, starts), engine.embed_suffixes(toks, starts)
    assert np.all(np.sum(a * b, axis=1) > 0.999)


def test_vanilla_answers_are_identical_on_the_server(remote, engine):
    settings = GenerationSettings(mode="vanilla", sampling=SamplingSettings(seed=5, max_tokens=32))
    assert _answer(remote, settings) == _answer(engine, settings)


@pytest.mark.slow
def test_a_short_fast_rain_answer_is_identical_on_the_server(remote, engine):
    # the prompted judge on both: a server gives no hidden states, so the latent judge is not there to compare
    settings = GenerationSettings(mode="rain", profile="fast-prompted", rain=profile_settings("fast-prompted"),
                                  sampling=SamplingSettings(seed=3, max_tokens=16))
    assert _answer(remote, settings) == _answer(engine, settings)


@pytest.mark.slow
def test_the_default_profile_on_a_server_says_in_one_line_that_the_latent_judge_is_unavailable(llama_server, rl_home):
    r = run_cli(["run", "--engine", llama_server, "-n", "6", "Hello"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    notes = [l for l in r.stderr.splitlines() if "hidden states" in l]
    assert len(notes) == 1 and "prompted judge" in notes[0]


# -- the command line -------------------------------------------------------------------------------

def test_run_with_engine_answers_from_the_server(llama_server, model_path, rl_home):
    args = ["run", "--vanilla", "-n", "12", "--seed", "2", "How are you?"]
    served = run_cli([*args, "--engine", llama_server], env_home=rl_home)
    local = run_cli([*args, "-m", str(model_path)], env_home=rl_home)
    assert served.returncode == 0, served.stderr
    assert served.stdout == local.stdout and served.stdout.strip()


def test_a_wrong_url_fails_fast_with_one_line(rl_home):
    t0 = time.monotonic()
    r = run_cli(["run", "--engine", f"http://127.0.0.1:{_free_port()}", "hi"], env_home=rl_home, timeout=60)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 15
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach an inference server" in lines[0] and "Traceback" not in r.stderr


def test_a_url_that_is_not_a_llama_server_fails_with_one_line(server, rl_home):
    r = run_cli(["run", "--engine", server.url("/"), "hi"], env_home=rl_home, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a ready llama.cpp server" in lines[0]


@pytest.mark.slow
def test_a_server_that_goes_away_mid_answer_gives_one_line_exit_1_and_keeps_the_text(model_path, rl_home):
    proc, url = start_server(model_path, parallel=1, embeddings=False)
    env = dict(os.environ, RAINLOCAL_HOME=str(rl_home))
    cli = subprocess.Popen([sys.executable, "-m", "rainlocal", "run", "--engine", url, "--vanilla", "-n", "400",
                            "--seed", "1", "Write a very long story about a dragon who learns to bake bread."],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        seen = os.read(cli.stdout.fileno(), 64)  # the first committed text
        assert seen.strip()
    finally:
        stop_process(proc)
    rest, err = cli.communicate(timeout=60)
    assert cli.returncode == 1
    out = seen + rest
    assert out.startswith(seen) and len(out.strip()) > 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "went away" in lines[0], err.decode()


@pytest.mark.slow
def test_bench_with_engine_reports_requests_and_request_batch_width(llama_server, rl_home):
    import json

    r = run_cli(["bench", "--engine", llama_server, "-p", "1", "-n", "8", "--strategies", "vanilla,fast", "--json"],
                env_home=rl_home, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    va, fa = result["strategies"]["vanilla"], result["strategies"]["fast"]
    assert va["requests"] > 0 and fa["requests"] > 0
    assert va["request_batch_width"] == pytest.approx(1.0)  # vanilla asks one distribution at a time
    assert fa["request_batch_width"] > 1.0  # the judge's two option orders go out together
    assert result["settings"]["engine"] == llama_server


def _prompt_tokens_served(url: str) -> float:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("llamacpp:prompt_tokens_total"))


@pytest.mark.slow
def test_eval_with_two_servers_answers_every_prompt_once_and_uses_both(model_path, rl_home, tmp_path):
    import json

    a, url_a = start_server(model_path, parallel=2, embeddings=False, extra=("--metrics",))
    b, url_b = start_server(model_path, parallel=2, embeddings=False, extra=("--metrics",))
    try:
        r = run_cli(["eval", "hh", "--engine", url_a, "--engine", url_b, "--limit", "2", "-n", "3",
                     "--check-judge", "0", "--check-human", "0", "--strategies", "vanilla,rain", "-o", str(tmp_path / "ev")], env_home=rl_home, timeout=900)
        served = (_prompt_tokens_served(url_a), _prompt_tokens_served(url_b))
    finally:
        stop_process(a)
        stop_process(b)
    assert r.returncode == 0, r.stderr
    units = [(rec["id"], rec["system"]) for rec in map(json.loads, (tmp_path / "ev" / "results.jsonl").open())]
    assert sorted(units) == sorted({(u[0], s) for u in units for s in ("vanilla", "rain")}) and len(units) == 4
    assert served[0] > 0 and served[1] > 0
