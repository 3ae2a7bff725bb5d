"""The installed shape of the package, built from the source checkout.

pyproject.toml maps the repository's stage folders into one namespace (`service/` is `tlcr.service`, ...); the
checkout also links each folder into `tlcr/` (`tlcr/service -> ../service`) so tools that walk a package's folder
(import-linter's grimp) see the namespace there too. `stage_package` copies the folders into the layout a wheel
installs, `DEST/tlcr/service/...`, read from the mapping, for tests that edit a copy.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """pyproject's `[tool.setuptools.package-dir]`: package name -> folder of the checkout."""
    with (root / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["tool"]["setuptools"]["package-dir"])


def stage_package(dest: Path, root: Path = ROOT) -> Path:
    """Copy the checkout's packages into `dest` as a wheel lays them out (`dest/tlcr/...`); returns `dest`."""
    compiled = shutil.ignore_patterns("__pycache__", "*.pyc")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # The links inside tlcr/ are left out: each mapped folder is copied into place below.
        links = {n for n in names if (Path(folder) / n).is_symlink()}
        return set(compiled(folder, names)) | links
    # Parents first, so a subpackage's folder lands inside its parent's copy.
    for package, folder in sorted(package_dirs(root).items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(root / folder, dest.joinpath(*package.split(".")), ignore=ignore, dirs_exist_ok=True)
    shutil.copy2(root / "pyproject.toml", dest / "pyproject.toml")
    return dest
