"""Build step: ship the top-level ``models.toml`` (the catalogue's one source) inside the package.

Everything else is declared in pyproject.toml. The copy goes into the build directory only, next to
``rainlocal/catalog/entries.py``, so wheels (and wheels built from the sdist, which carries the
top-level file through MANIFEST.in) contain it while the checkout keeps a single file.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOG = "models.toml"
TARGET = Path("rainlocal", "catalog", CATALOG)


class BuildWithCatalog(build_py):
    def run(self) -> None:
        super().run()
        if not self.dry_run:
            target = Path(self.build_lib) / TARGET
            self.mkpath(str(target.parent))
            self.copy_file(CATALOG, str(target), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / TARGET)]


setup(cmdclass={"build_py": BuildWithCatalog})
