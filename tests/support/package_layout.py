"""The installed shape of the package, built from the source checkout.

pyproject.toml maps the repository's stage folders into one namespace (`service/` is `tlcr.service`, ...), so a
tool that walks a package's folder (import-linter's grimp) finds only `tlcr/` in the checkout. `stage_package`
copies the folders into the layout a wheel installs, `DEST/tlcr/service/...`, read from the same mapping.
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
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    # Parents first, so a subpackage's folder lands inside its parent's copy.
    for package, folder in sorted(package_dirs(root).items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(root / folder, dest.joinpath(*package.split(".")), ignore=ignore, dirs_exist_ok=True)
    shutil.copy2(root / "pyproject.toml", dest / "pyproject.toml")
    return dest
