"""``-m ollama:NAME[:TAG]`` and ``-m hf:OWNER/REPO[:FILE_OR_QUANT]``: models other programs downloaded.

The stores are built in temporary directories with the real layouts and the real SmolLM2 bytes:
an ollama store (``manifests/registry.ollama.ai/library/NAME/TAG`` JSON naming its layers,
``blobs/sha256-<hex>`` named by the sha256 of their bytes) and a Hugging Face hub cache
(``models--OWNER--REPO/refs/main``, ``snapshots/<rev>/FILE`` as relative symlinks into ``blobs/``).
Blobs are symlinks to the session's model file (a real store holds the bytes; reading is the same).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from rainlocal.catalog import find_stored, resolve_model
from rainlocal.errors import ModelError, UsageError

HF_REPO = ("bartowski", "SmolLM2-135M-Instruct-GGUF")
HF_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
HF_REV = "4c5b1e6a1f2d3c4b5a69788796a5b4c3d2e1f001"
HF_TWO_REPO = ("someone", "smollm2-quants")
TINY_README = b"# SmolLM2 GGUF\n"


@pytest.fixture(scope="module")
def model_sha256(model_path) -> str:
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _blob_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_ollama_model(root: Path, model_path: Path, sha: str, *, namespace: str, name: str, tag: str,
                       with_model_layer: bool = True) -> Path:
    """One model as ``ollama pull`` leaves it: its blobs, and a manifest naming them by digest."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    small = {
        "application/vnd.ollama.image.template": b"{{ .Prompt }}",
        "application/vnd.ollama.image.params": b'{"stop": ["<|im_end|>"]}',
    }
    config = b'{"model_format": "gguf", "model_family": "llama"}'
    layers = []
    if with_model_layer:
        model_blob = blobs / f"sha256-{sha}"
        if not model_blob.exists():
            model_blob.symlink_to(model_path)
        layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{sha}",
                       "size": model_path.stat().st_size})
    for media_type, data in small.items():
        digest = _blob_digest(data)
        (blobs / digest.replace(":", "-")).write_bytes(data)
        layers.append({"mediaType": media_type, "digest": digest, "size": len(data)})
    (blobs / _blob_digest(config).replace(":", "-")).write_bytes(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": _blob_digest(config), "size": len(config)},
        "layers": layers,
    }
    path = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def write_hf_repo(cache: Path, model_path: Path, sha: str, owner: str, repo: str, files: list[str]) -> Path:
    """One repository as huggingface_hub caches it; every GGUF name links to the same blob (same bytes)."""
    repo_dir = cache / f"models--{owner}--{repo}"
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(HF_REV)
    snapshot = repo_dir / "snapshots" / HF_REV
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs" / sha).symlink_to(model_path)
    readme_blob = hashlib.sha1(b"blob %d\0" % len(TINY_README) + TINY_README).hexdigest()  # git's id for small files
    (repo_dir / "blobs" / readme_blob).write_bytes(TINY_README)
    (snapshot / "README.md").symlink_to(Path("..", "..", "blobs", readme_blob))
    for name in files:
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(*[".."] * (len(Path(name).parts) + 1), "blobs", sha))
    return snapshot


@pytest.fixture(scope="module")
def stores(tmp_path_factory, model_path, model_sha256) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stores")
    ollama = base / "ollama" / "models"
    write_ollama_model(ollama, model_path, model_sha256, namespace="library", name="smollm2", tag="135m")
    write_ollama_model(ollama, model_path, model_sha256, namespace="someuser", name="tiny", tag="latest")
    hub = base / "hf" / "hub"
    write_hf_repo(hub, model_path, model_sha256, *HF_REPO, [HF_FILE])
    write_hf_repo(hub, model_path, model_sha256, *HF_TWO_REPO,
                  ["smollm2-135m-Q4_K_M.gguf", "smollm2-135m-Q8_0.gguf", "mmproj-smollm2-f16.gguf"])
    return {"ollama": ollama, "hub": hub}


@pytest.fixture()
def store_env(stores, monkeypatch) -> dict[str, str]:
    env = {"OLLAMA_MODELS": str(stores["ollama"]), "HF_HUB_CACHE": str(stores["hub"])}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_mtime_ns) for p in root.rglob("*"))


# ---- resolution


def test_ollama_name_resolves_to_the_model_layers_blob(store_env, stores, model_sha256):
    assert resolve_model("ollama:smollm2:135m") == stores["ollama"] / "blobs" / f"sha256-{model_sha256}"


def test_ollama_tag_defaults_to_latest_and_namespaces_are_paths(store_env, stores, model_sha256):
    assert resolve_model("ollama:someuser/tiny") == stores["ollama"] / "blobs" / f"sha256-{model_sha256}"
    with pytest.raises(ModelError, match="registry.ollama.ai/library/smollm2/latest"):
        resolve_model("ollama:smollm2")


def test_ollama_default_store_is_under_home(stores, monkeypatch, tmp_path, model_path, model_sha256):
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    write_ollama_model(tmp_path / ".ollama" / "models", model_path, model_sha256,
                       namespace="library", name="smollm2", tag="135m")
    assert resolve_model("ollama:smollm2:135m") == tmp_path / ".ollama" / "models" / "blobs" / f"sha256-{model_sha256}"


def test_ollama_manifest_without_a_model_layer_is_a_model_error(stores, monkeypatch, tmp_path, model_path, model_sha256):
    write_ollama_model(tmp_path, model_path, model_sha256, namespace="library", name="adapter", tag="latest",
                       with_model_layer=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    with pytest.raises(ModelError, match="no model layer"):
        resolve_model("ollama:adapter")


def test_hf_repo_with_one_gguf_resolves_to_its_snapshot_path(store_env, stores):
    snapshot_file = stores["hub"] / f"models--{HF_REPO[0]}--{HF_REPO[1]}" / "snapshots" / HF_REV / HF_FILE
    assert resolve_model(f"hf:{HF_REPO[0]}/{HF_REPO[1]}") == snapshot_file
    assert resolve_model(f"hf:{HF_REPO[0]}/{HF_REPO[1]}:{HF_FILE}") == snapshot_file


def test_hf_quant_picks_the_matching_file(store_env, stores):
    snapshot = stores["hub"] / f"models--{HF_TWO_REPO[0]}--{HF_TWO_REPO[1]}" / "snapshots" / HF_REV
    assert resolve_model("hf:someone/smollm2-quants:Q8_0") == snapshot / "smollm2-135m-Q8_0.gguf"
    assert resolve_model("hf:someone/smollm2-quants:q4_k_m") == snapshot / "smollm2-135m-Q4_K_M.gguf"


def test_hf_ambiguous_repo_lists_the_choices(store_env):
    with pytest.raises(UsageError) as e:
        resolve_model("hf:someone/smollm2-quants")
    message = str(e.value)
    assert "hf:someone/smollm2-quants:Q4_K_M" in message and "hf:someone/smollm2-quants:Q8_0" in message
    assert "mmproj" not in message and "\n" not in message


def test_hf_snapshot_without_refs_main_is_used_when_it_is_the_only_one(tmp_path, monkeypatch, model_path, model_sha256):
    snapshot = write_hf_repo(tmp_path, model_path, model_sha256, "o", "r", ["m-Q4_1.gguf"])
    (tmp_path / "models--o--r" / "refs" / "main").unlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_model("hf:o/r") == snapshot / "m-Q4_1.gguf"


def test_hf_file_whose_blob_was_deleted_is_not_offered(tmp_path, monkeypatch, model_path, model_sha256):
    write_hf_repo(tmp_path, model_path, model_sha256, "o", "r", ["m-Q4_1.gguf"])
    (tmp_path / "models--o--r" / "blobs" / model_sha256).unlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))
    with pytest.raises(ModelError, match="no GGUF file"):
        resolve_model("hf:o/r")
    assert find_stored() == []


def test_hf_home_puts_the_cache_under_hub(stores, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(stores["hub"].parent))
    assert resolve_model(f"hf:{HF_REPO[0]}/{HF_REPO[1]}").name == HF_FILE
    monkeypatch.delenv("HF_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelError, match=str(tmp_path / ".cache" / "huggingface" / "hub")):
        resolve_model(f"hf:{HF_REPO[0]}/{HF_REPO[1]}")


def test_find_stored_lists_both_stores_with_their_names(store_env, stores, model_path):
    found = {m.name: m for m in find_stored()}
    assert sorted(found) == [
        "hf:bartowski/SmolLM2-135M-Instruct-GGUF",
        "hf:someone/smollm2-quants:Q4_K_M",
        "hf:someone/smollm2-quants:Q8_0",
        "ollama:smollm2:135m",
        "ollama:someuser/tiny:latest",
    ]
    assert {m.size for m in found.values()} == {model_path.stat().st_size}
    assert {m.store for m in found.values()} == {"hf", "ollama"}


# ---- the real command


@pytest.mark.slow
def test_run_answers_from_either_store_as_from_the_file(store_env, stores, model_path, rl_home):
    before = {name: _listing(root) for name, root in stores.items()}
    args = ["--vanilla", "-n", "4", "Hi"]
    plain = run_cli(["run", "-m", str(model_path), *args], env_home=rl_home)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()
    for ref in ("ollama:smollm2:135m", "hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_1"):
        r = run_cli(["run", "-m", ref, *args], env_home=rl_home, extra_env=store_env)
        assert r.returncode == 0, r.stderr
        assert r.stdout == plain.stdout, ref
    assert {name: _listing(root) for name, root in stores.items()} == before  # read-only


@pytest.mark.slow
def test_run_json_names_a_store_model_as_the_user_did(store_env, stores, rl_home):
    import json

    r = run_cli(["run", "-m", "ollama:smollm2:135m", "--vanilla", "-n", "2", "--json", "Hi"], env_home=rl_home,
                extra_env=store_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "ollama:smollm2:135m"  # not the blob's sha256 name


def test_models_list_all_shows_both_stores(store_env, stores, rl_home, model_path):
    r = run_cli(["models", "list", "--all", "--json"], env_home=rl_home, extra_env=store_env)
    assert r.returncode == 0, r.stderr
    rows = {row["alias"]: row for row in json.loads(r.stdout)}
    ollama = rows["ollama:smollm2:135m"]
    assert ollama["source"] == {"type": "ollama"} and ollama["size"] == model_path.stat().st_size
    assert Path(ollama["path"]).parent == stores["ollama"] / "blobs"
    hf = rows["hf:someone/smollm2-quants:Q8_0"]
    assert hf["source"] == {"type": "hf"} and hf["path"].endswith(f"snapshots/{HF_REV}/smollm2-135m-Q8_0.gguf")
    assert "smollm2-135m" in rows  # the catalogue is still there


def test_models_list_all_table_gives_name_size_path_and_where_it_looked(store_env, stores, rl_home, model_path):
    r = run_cli(["models", "list", "--all"], env_home=rl_home, extra_env=store_env)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "ollama:smollm2:135m" in line)
    assert f"{model_path.stat().st_size / 2**20:.1f} MiB" in row and str(stores["ollama"] / "blobs") in row
    assert f"ollama store: {stores['ollama']}" in r.stdout and f"Hugging Face cache: {stores['hub']}" in r.stdout


def test_models_list_without_all_leaves_the_stores_out(store_env, rl_home):
    r = run_cli(["models", "list", "--json"], env_home=rl_home, extra_env=store_env)
    assert r.returncode == 0, r.stderr
    assert not [row for row in json.loads(r.stdout) if row["alias"].startswith(("ollama:", "hf:"))]


def _one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    return lines[0]


def test_missing_ollama_model_says_where_it_looked(store_env, stores, rl_home):
    line = _one_line_error(run_cli(["run", "-m", "ollama:nope:7b", "Hi"], env_home=rl_home, extra_env=store_env), 1)
    assert "nope:7b" in line and str(stores["ollama"]) in line
    assert os.path.join("manifests", "registry.ollama.ai", "library", "nope", "7b") in line


def test_missing_hf_model_says_where_it_looked(store_env, stores, rl_home):
    line = _one_line_error(run_cli(["run", "-m", "hf:nobody/nothing-GGUF", "Hi"], env_home=rl_home, extra_env=store_env), 1)
    assert "models--nobody--nothing-GGUF" in line and str(stores["hub"]) in line


def test_hf_quant_that_is_not_there_lists_what_is(store_env, rl_home):
    line = _one_line_error(run_cli(["run", "-m", "hf:someone/smollm2-quants:Q2_K", "Hi"], env_home=rl_home, extra_env=store_env), 1)
    assert "Q2_K" in line and "hf:someone/smollm2-quants:Q8_0" in line


def test_ambiguous_hf_model_is_a_usage_error(store_env, rl_home):
    line = _one_line_error(run_cli(["run", "-m", "hf:someone/smollm2-quants", "Hi"], env_home=rl_home, extra_env=store_env), 2)
    assert "choose one" in line


def test_models_rm_refuses_a_store_model_and_leaves_it(store_env, stores, rl_home):
    before = _listing(stores["ollama"])
    line = _one_line_error(run_cli(["models", "rm", "ollama:smollm2:135m"], env_home=rl_home, extra_env=store_env), 2)
    assert "read-only" in line
    assert _listing(stores["ollama"]) == before


def test_records_name_a_store_model_as_given_and_a_file_by_its_name(tmp_path):
    from rainlocal.catalog.resolve import model_label

    blob = tmp_path / "sha256-0123abcd"
    assert model_label("ollama:smollm2:135m", blob) == "ollama:smollm2:135m"
    assert model_label("hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_1", blob) == "hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_1"
    assert model_label("smollm2-135m", tmp_path / "SmolLM2.gguf") == "SmolLM2.gguf"
    assert model_label(None, tmp_path / "SmolLM2.gguf") == "SmolLM2.gguf"
