"""Shared fixtures: one real SmolLM2-135M model per test session.

The model comes from ``RAINLOCAL_TEST_MODEL`` or from the catalogue: when it is missing the session
pulls it with rainlocal's own ``models pull`` (so a clean clone needs no set-up step). Tests that need
it fail rather than skip when it cannot be had, so a run without the model cannot pass as green.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from loopback_http import LoopbackServer, write_tiny_gguf

# A test run started in the background by a script (``pytest ... &``) inherits SIGINT ignored, and so would
# every command the tests start, whose Ctrl-C tests would then fail (a chat that ignores Ctrl-C, a server
# that exits 0): give this process, and so its children, Python's own handler.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _pulled(alias: str) -> Path:
    """The catalogue model's file, pulled with rainlocal's own ``models pull`` when it is missing."""
    from rainlocal.catalog import model_path

    path = model_path(alias)
    if not path.exists():
        r = subprocess.run([sys.executable, "-m", "rainlocal", "models", "pull", alias],
                           capture_output=True, text=True, cwd=own_cwd())
        if r.returncode != 0 or not path.exists():
            pytest.fail(f"could not pull the test model {alias}: {r.stderr.strip()[-500:]}")
    return path


@pytest.fixture(scope="session")
def model_path() -> Path:
    env = os.environ.get("RAINLOCAL_TEST_MODEL")
    if env:
        path = Path(env)
        if not path.exists():
            pytest.fail(f"RAINLOCAL_TEST_MODEL={env} does not exist")
        return path
    return _pulled("smollm2-135m")


@pytest.fixture(scope="session")
def judge_model_path() -> Path:
    """qwen2.5-coder-0.5b: the smallest catalogue model whose self-evaluation tells a refusal from
    compliance (SmolLM2-135M's scores for the two lie within batch noise of each other)."""
    return _pulled("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def engine(model_path):
    from rainlocal.engine.llama import LlamaEngine

    eng = LlamaEngine(model_path, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture()
def rl_home(tmp_path, monkeypatch) -> Path:
    """An empty RAINLOCAL_HOME for this test (config, data, cache all under it)."""
    home = tmp_path / "rlhome"
    monkeypatch.setenv("RAINLOCAL_HOME", str(home))
    return home


def own_cwd() -> str:
    """A fresh empty working directory for a CLI subprocess: ``python -m rainlocal`` run from the
    checkout would import ``./rainlocal`` instead of the installed package, and files a command writes
    relative to its working directory must not land in the checkout."""
    return tempfile.mkdtemp(prefix="rainlocal-cwd-")


def shared_data() -> Path | None:
    """The development splits (``../shared/data`` beside the checkout, or the workspace's copy)."""
    for folder in (Path(__file__).resolve().parents[1] / ".." / "shared" / "data", Path("/work/shared/data")):
        if (folder / "hh_harmless_dev.jsonl").is_file():
            return folder.resolve()
    return None


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """End a server the tests started: SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_cli(args: list[str], *, input: str | None = None, env_home: Path | None = None, timeout: float = 300,
            extra_env: dict[str, str] | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run the real ``rainlocal`` command as a user would (a subprocess in its own working directory;
    stdin closed unless given)."""
    env = dict(os.environ)
    data = shared_data()
    if data is not None:  # an installed rainlocal run outside the checkout finds the suites here
        env.setdefault("RAINLOCAL_DATA", str(data))
    if env_home is not None:
        env["RAINLOCAL_HOME"] = str(env_home)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "rainlocal", *args],
        input=input if input is not None else "",
        capture_output=True, text=True, env=env, timeout=timeout, cwd=str(cwd or own_cwd()),
    )


@pytest.fixture(scope="session", autouse=True)
def installed_package(request):
    """With ``RAINLOCAL_TEST_INSTALLED=1`` (CI) the tests must exercise the installed package, not the
    checkout's ``rainlocal/`` (a file missing from the wheel would otherwise pass unnoticed)."""
    if os.environ.get("RAINLOCAL_TEST_INSTALLED") == "1":
        import rainlocal

        here = Path(rainlocal.__file__).resolve()
        root = Path(str(request.config.rootpath)).resolve()
        if root in here.parents:
            pytest.fail(f"rainlocal was imported from the checkout ({here}), not the installed package: "
                        "run `python -P -m pytest` or pytest from another folder")


@pytest.fixture(scope="module")
def server():
    """A loopback HTTP server (Range requests, a PEP 503 simple index) for download tests."""
    s = LoopbackServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    """A tiny but valid GGUF file's bytes."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
