"""The README's exit-code table is core.exit_codes.ExitCode's."""

from __future__ import annotations

import re
from pathlib import Path

from tlcr.core.exit_codes import ExitCode


def test_readme_table_lists_every_exit_code() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes and logging", 1)[1].split("\n## ", 1)[0]
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)]
    assert documented == [int(code) for code in ExitCode]
