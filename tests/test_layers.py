"""The layers of README "Layout", checked by import-linter's contracts in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import processes
from tests.support.package_layout import stage_package

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency (./setup.sh installs it)"
    return processes.run([exe, "--no-cache"], cwd=cwd, timeout=300,
                         env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(cwd)})


def test_every_import_linter_contract_is_kept(tmp_path: Path) -> None:
    result = _lint_imports(stage_package(tmp_path / "tree"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line"), [
    ("core/scoring.py", "import tlcr.trainer.ppo_math\n"),  # the foundation reaching up to a stage
    ("labeling/cache.py", "import tlcr.trainer.sft\n"),  # two stages tied together
    ("trainer/rollout.py", "import tlcr.service.batcher\n"),  # the trainer reaching into the server
    ("service/client.py", "import tlcr.service.scorer\n"),  # the client pulling in the server (and torch)
])
def test_an_import_across_the_layers_breaks_a_contract(tmp_path: Path, module: str, line: str) -> None:
    copy = stage_package(tmp_path / "tree")
    target = copy / "tlcr" / module
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    result = _lint_imports(copy)
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout + result.stderr
