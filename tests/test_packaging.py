"""The catalogue has one source, the top-level models.toml, and what a user installs carries it.

The sdist and the wheel are built the way pip and ``python -m build`` build them (setuptools'
PEP 517 hooks, in a subprocess, from a copy of the project), the wheel from the unpacked sdist as
``pip install rainlocal-X.tar.gz`` would; then the installed files are asked for the catalogue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = "rainlocal/catalog/models.toml"


def _in_virtualenv(path: Path) -> bool:
    """Under a virtual environment made inside the checkout (``python -m venv .venv``): an installed copy."""
    return any((REPO / parent / "pyvenv.cfg").exists() for parent in path.relative_to(REPO).parents
               if parent != Path("."))


def test_checkout_has_one_catalogue_file():
    copies = sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("**/models.toml")
                    if "build" not in p.parts and not _in_virtualenv(p))
    assert copies == ["models.toml"]


@pytest.mark.slow
def test_wheel_built_from_the_sdist_ships_the_top_level_catalogue(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "models.toml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "rainlocal", project / "rainlocal", ignore=shutil.ignore_patterns("__pycache__"))

    # `python -m build` makes the sdist, then the wheel from the unpacked sdist, each in a fresh
    # isolated environment with the build requirements pyproject.toml names.
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(project)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (sdist,), (wheel,) = list(dist.glob("*.tar.gz")), list(dist.glob("*.whl"))
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
    assert any(n.endswith("/models.toml") and n.count("/") == 1 for n in names)
    assert not any(n.endswith("/rainlocal/catalog/models.toml") for n in names)  # one copy in the sdist, too
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(SHIPPED) == (REPO / "models.toml").read_bytes()
        # the data the quick start and a first evaluation need without fitting or reading anything
        for folder, ext in (("rainlocal/latent/probes", ".npz"), ("rainlocal/evals/data/checks", ".jsonl.gz")):
            want = sorted(f"{folder}/{p.name}" for p in (REPO / folder).iterdir() if p.name.endswith(ext))
            assert want and sorted(n for n in zf.namelist() if n.startswith(folder + "/")) == want
        zf.extractall(tmp_path / "installed")

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "installed"), "RAINLOCAL_HOME": str(tmp_path / "home")}
    found = subprocess.run(
        [sys.executable, "-P", "-c",
         "from rainlocal import catalog; print(catalog.builtin_catalog_file()); print(catalog.load_catalog().default)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [str(tmp_path / "installed" / SHIPPED), "qwen2.5-coder-0.5b"]
