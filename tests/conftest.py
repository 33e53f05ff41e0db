"""Shared fixtures: one real SmolLM2-135M model per test session.

The model comes from ``RAINLOCAL_TEST_MODEL`` or from the catalogue (``rainlocal models pull
smollm2-135m``, which CI runs first). Tests that need it fail with that instruction rather than
skipping, so a run without the model cannot pass as green.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopback_http import LoopbackServer, write_tiny_gguf


def _model_path() -> Path:
    env = os.environ.get("RAINLOCAL_TEST_MODEL")
    if env:
        return Path(env)
    from rainlocal.catalog import model_path

    return model_path("smollm2-135m")


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = _model_path()
    if not path.exists():
        pytest.fail(f"test model missing at {path}: run `rainlocal models pull smollm2-135m` (or set RAINLOCAL_TEST_MODEL)")
    return path


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


def run_cli(args: list[str], *, input: str | None = None, env_home: Path | None = None, timeout: float = 300,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real ``rainlocal`` command as a user would (a subprocess; stdin closed unless given)."""
    env = dict(os.environ)
    if env_home is not None:
        env["RAINLOCAL_HOME"] = str(env_home)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "rainlocal", *args],
        input=input if input is not None else "",
        capture_output=True, text=True, env=env, timeout=timeout,
    )


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
