"""``rainlocal serve`` as clients use it: the real server in a subprocess on a free loopback port with the
real SmolLM2-135M model, driven by the official ``openai`` package and by raw HTTP (httpx).

One server serves the whole module, started with an API key (through ``RAINLOCAL_API_KEY``), a
1024-token context and ``--max-queue 1``, so every test leaves it idle again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from conftest import run_cli, stop_process

KEY = "test-key-4711"
CTX = 1024
#: A request that keeps SmolLM2 busy for a long time (at seed 0 it tells a story past 200 tokens).
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]


@dataclass
class Server:
    url: str
    log: Path
    proc: subprocess.Popen

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def post(self, path: str, body, *, key: str | None = KEY, timeout: float = 120) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(self.url + path, content=content, headers=headers, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = dict(os.environ, RAINLOCAL_API_KEY=KEY)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rainlocal", "serve", "-m", str(model_path), "--port", str(port), "-t", "1",
             "-c", str(CTX), "--max-queue", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
        )
    s = Server(f"http://127.0.0.1:{port}", log, proc)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"rainlocal serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if s.health()["status"] == "ok":
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"rainlocal serve did not answer /health within 120 s:\n{log.read_text()}")
        time.sleep(0.2)
    yield s
    stop_process(proc, timeout=30)


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def _wait_idle(server: Server, timeout: float = 5.0) -> tuple[dict, float]:
    """The queue status once nothing runs or waits, and how long that took."""
    t0 = time.monotonic()
    while True:
        q = server.health()["queue"]
        if q["running"] == 0 and q["waiting"] == 0:
            return q, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return q, time.monotonic() - t0
        time.sleep(0.05)


class OpenStream:
    """A streamed chat answer held open by a raw HTTP client until ``close()`` (a client going away)."""

    def __init__(self, server: Server, body: dict):
        self.client = httpx.Client(timeout=300)
        self.cm = self.client.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True},
                                     headers={"Authorization": f"Bearer {KEY}"})
        self.response = self.cm.__enter__()
        self.lines = self.response.iter_lines()

    def first_text(self) -> str:
        """Read until the first chunk with answer text (the search is under way then)."""
        for line in self.lines:
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    return delta["content"]
        raise AssertionError("the stream ended before any text")

    def close(self) -> None:
        self.cm.__exit__(None, None, None)
        self.client.close()


# ------------------------------------------------------------------ the openai client


def test_models_list_names_the_served_model(client, model_path):
    assert [m.id for m in client.models.list().data] == [model_path.stem]


@pytest.mark.slow
def test_chat_answer_is_rain_by_default_with_usage_and_search_stats(client, model_path):
    r = client.chat.completions.create(model=model_path.stem, messages=[{"role": "user", "content": "Say hello."}], max_tokens=6)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    u = r.usage
    assert 1 <= u.completion_tokens <= 6 and u.prompt_tokens > 5
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    extra = r.model_extra["rainlocal"]
    assert extra["mode"] == "rain" and extra["profile"] == "fast"
    st = extra["stats"]
    assert st["gate"] in ("pass", "check") and 0.0 <= st["p_unsafe"] <= 1.0  # the latent judge read the request
    assert (st["evaluations"] >= 1) == (st["gate"] == "check")  # and judged the drafts only where it could object


@pytest.mark.slow
def test_streamed_rain_answer_equals_the_unstreamed_one(client, model_path):
    msgs = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(model=model_path.stem, messages=msgs, max_tokens=6, seed=5)
    chunks = list(client.chat.completions.create(model=model_path.stem, messages=msgs, max_tokens=6, seed=5,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].model_extra["rainlocal"]["mode"] == "rain"


def test_stream_without_include_usage_has_no_usage_chunk(client, model_path):
    chunks = list(client.chat.completions.create(model=model_path.stem, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, stream=True, extra_body={"rain": False}))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"


@pytest.mark.slow
def test_plain_decoding_equals_rainlocal_run_vanilla(client, model_path):
    prompt = "Write one sentence about rivers."
    r = client.chat.completions.create(model=model_path.stem, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=8, seed=11, temperature=0.9, extra_body={"rain": False})
    cli = run_cli(["run", "-m", str(model_path), "--vanilla", "-n", "8", "--seed", "11", "--temp", "0.9",
                   "-c", str(CTX), "-t", "1", prompt])
    assert cli.returncode == 0, cli.stderr
    assert r.choices[0].message.content == cli.stdout[:-1]
    assert r.model_extra["rainlocal"]["mode"] == "vanilla"


def test_seed_changes_a_sampled_answer_and_repeats_it(client, model_path):
    def answer(seed: int) -> str:
        r = client.chat.completions.create(
            model=model_path.stem, messages=[{"role": "user", "content": "Invent a name for a cat."}],
            max_tokens=8, seed=seed, temperature=1.5, extra_body={"rain": False})
        return r.choices[0].message.content

    first = answer(1)
    assert answer(1) == first
    assert any(answer(s) != first for s in (2, 3, 4))


def test_text_completion_continues_the_raw_prompt_greedily(client, model_path, engine):
    prompt = "The capital of France is"
    r = client.completions.create(model=model_path.stem, prompt=prompt, max_tokens=5, temperature=0,
                                  extra_body={"rain": False})
    tokens = engine.prompt_tokens(prompt)  # no chat template around a text completion's prompt
    answer: list[int] = []
    for _ in range(5):  # greedy decoding, step by step, outside the server
        answer.append(int(engine.logprobs([tokens + answer])[0].argmax()))
    assert r.usage.prompt_tokens == len(tokens)
    assert r.choices[0].text == engine.detokenize(answer)
    assert r.choices[0].finish_reason == "length"


def test_streamed_text_completion_joins_to_the_whole_one(client, model_path):
    args = dict(model=model_path.stem, prompt="Once upon a time", max_tokens=8, temperature=0,
                extra_body={"rain": False})
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 8


def test_max_completion_tokens_limits_the_answer(client, model_path):
    r = client.chat.completions.create(model=model_path.stem, messages=LONG, max_completion_tokens=3,
                                       extra_body={"rain": False})
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_stop_string_ends_the_answer_before_it(client, model_path):
    prompt = "Count: 1, 2, 3, 4,"
    free = client.completions.create(model=model_path.stem, prompt=prompt, max_tokens=10, temperature=0,
                                     extra_body={"rain": False}).choices[0].text
    stop = free.split()[1]  # the second word of the free answer
    r = client.completions.create(model=model_path.stem, prompt=prompt, max_tokens=10, temperature=0, stop=[stop],
                                  extra_body={"rain": False})
    assert r.choices[0].text == free[: free.index(stop)]
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_rain_settings_per_request_set_the_search(client, model_path):
    r = client.chat.completions.create(
        model=model_path.stem, messages=[{"role": "user", "content": "Say hello."}], max_tokens=4,
        extra_body={"rain": {"profile": "paper", "T": 2, "min_searches": 2}})
    extra = r.model_extra["rainlocal"]
    assert extra["profile"] == "paper" and extra["objective"] == "harmless"
    stats = extra["stats"]
    assert stats["commits"] >= 1
    assert 1 <= stats["searches"] <= 2 * stats["commits"]  # the paper profile alone searches >= 15 per commit


# ------------------------------------------------------------------ raw HTTP: refusals in OpenAI's shape


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text
    return err


def test_missing_or_wrong_api_key_gets_401(server):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    for key in (None, "wrong-key"):
        err = _error(server.post("/v1/chat/completions", body, key=key), 401)
        assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    _error(httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer nope"}), 401)


def test_health_needs_no_key(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_unknown_model_gets_404(server):
    err = _error(server.post("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}),
                 404)
    assert err["code"] == "model_not_found" and "gpt-4o" in err["message"]


def test_prompt_longer_than_the_context_gets_400(server):
    long_prompt = "word " * (CTX + 200)
    err = _error(server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": long_prompt}]}), 400)
    assert err["code"] == "context_length_exceeded" and f"context is {CTX} tokens" in err["message"]
    err = _error(server.post("/v1/completions", {"prompt": long_prompt}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"


@pytest.mark.parametrize("rain, param, words", [
    ({"T": "many"}, "rain.T", "integer"),
    ({"T": 2.5}, "rain.T", "integer"),
    ({"profile": "quick"}, "rain.profile", "unknown profile"),
    ({"objective": "/etc/passwd"}, "rain.objective", "unknown objective"),
    ({"gamma_typo": 0.1}, "rain", "unknown RAIN setting 'gamma_typo'"),
    ({"score": "loud"}, "rain", "'score' must be"),
    (7, "rain", "must be false"),
])
def test_bad_rain_setting_gets_400_naming_it(server, rain, param, words):
    err = _error(server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "rain": rain}), 400)
    assert err["param"] == param and words in err["message"]


@pytest.mark.parametrize("body, words", [
    (b'{"messages": [', "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'{"messages": []}', "messages"),
    (b'{"messages": [{"role": "robot", "content": "Hi"}]}', "messages.0.role"),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": 9}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "n": 3}', "n"),
])
def test_malformed_body_gets_400(server, body, words):
    err = _error(server.post("/v1/chat/completions", body), 400)
    assert err["type"] == "invalid_request_error" and words in err["message"]


def test_unknown_endpoint_gets_404_in_openai_shape(server):
    _error(httpx.get(server.url + "/v1/embeddings"), 404)


# ------------------------------------------------------------------ cancellation, the queue, responsiveness


@pytest.mark.slow
def test_client_leaving_a_stream_stops_its_search(server):
    before = server.health()["queue"]["cancelled"]
    stream = OpenStream(server, {"messages": LONG, "max_tokens": 600})
    assert stream.first_text()
    stream.close()
    q, waited = _wait_idle(server)
    assert q["running"] == 0 and waited < 3, q
    assert q["cancelled"] == before + 1
    assert "cancelled (the client went away)" in server.log.read_text()
    t0 = time.monotonic()
    r = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                                             "rain": False})
    assert r.status_code == 200 and time.monotonic() - t0 < 5


@pytest.mark.slow
def test_client_leaving_a_whole_answer_request_stops_it(server):
    before = server.health()["queue"]["cancelled"]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        server.post("/v1/chat/completions", {"messages": LONG, "max_tokens": 600}, timeout=3)
    q, waited = _wait_idle(server)
    assert q["running"] == 0 and waited < 3, q
    assert q["cancelled"] == before + 1


@pytest.mark.slow
def test_client_leaving_before_its_turn_is_skipped(server):
    before = server.health()["queue"]
    stream = OpenStream(server, {"messages": LONG, "max_tokens": 600, "rain": False})
    try:
        stream.first_text()  # this answer runs; the next request waits behind it and gives up
        with pytest.raises(httpx.ReadTimeout):
            server.post("/v1/chat/completions", {"messages": LONG, "max_tokens": 600}, timeout=2)
    finally:
        stream.close()
    q, _ = _wait_idle(server)
    assert q["cancelled"] == before["cancelled"] + 2 and q["served"] == before["served"]
    assert "skipped before its turn (the client went away)" in server.log.read_text()


@pytest.mark.slow
def test_requests_beyond_the_queue_limit_get_429(server):
    stream = OpenStream(server, {"messages": LONG, "max_tokens": 600, "rain": False})
    results: list[httpx.Response] = []
    try:
        stream.first_text()  # one answer runs ...
        queued = threading.Thread(target=lambda: results.append(server.post(
            "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "rain": False})))
        queued.start()  # ... one waits (--max-queue 1) ...
        deadline = time.monotonic() + 10
        while server.health()["queue"]["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        err = _error(r, 429)  # ... and the third is turned away
        assert err["code"] == "queue_full" and r.headers["retry-after"]
    finally:
        stream.close()
    queued.join(timeout=60)
    assert results and results[0].status_code == 200  # the waiting one is answered once the first leaves


@pytest.mark.slow
def test_health_and_models_answer_while_a_rain_answer_runs(server):
    stream = OpenStream(server, {"messages": LONG, "max_tokens": 600})
    try:
        stream.first_text()
        for path in ("/health", "/v1/models"):
            t0 = time.monotonic()
            r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
            assert r.status_code == 200 and time.monotonic() - t0 < 1.0
        assert server.health()["queue"]["running"] == 1  # the search was still going
    finally:
        stream.close()
    _wait_idle(server)


# ------------------------------------------------------------------ the command itself


def test_serve_without_the_server_extra_says_how_to_install_it():
    code = "import sys; sys.modules['sse_starlette'] = None; from rainlocal.cli.main import main; main(['serve'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and 'pip install "rainlocal[server]"' in r.stderr


def test_serve_on_a_taken_port_fails_in_one_line(model_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = run_cli(["serve", "-m", str(model_path), "--port", str(port), "-t", "1"], timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


@pytest.mark.slow
def test_stopping_the_server_stops_the_answer_in_progress(model_path, tmp_path):
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rainlocal", "serve", "-m", str(model_path), "--port",
                                 str(port), "-t", "1", "--vanilla"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        s = Server(f"http://127.0.0.1:{port}", log, proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                s.health()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        stream = OpenStream(s, {"messages": LONG, "max_tokens": 600})
        assert stream.first_text()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=15) == 130
        assert time.monotonic() - t0 < 8
        stream.close()
        assert "Traceback" not in log.read_text()
        assert "cancelled" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
