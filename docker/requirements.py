"""Print the requirements of tlcr's extras, one per line, for an image that carries only its stage.

    python3 docker/requirements.py pyproject.toml service        -> build-system requires + base + tlcr[service]
    python3 docker/requirements.py pyproject.toml train label

`tlcr[...]` references inside an extra (e.g. every stage's `tlcr[cli]`) are expanded; the base dependencies and
the build-system requirements (to build the wheel in the image) are always included. Standard library only.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^tlcr\[([^\]]+)\]$")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    optional: dict[str, list[str]] = project["project"]["optional-dependencies"]
    out = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}: pyproject.toml has {', '.join(sorted(optional))}")
        seen.add(extra)
        for requirement in optional[extra]:
            inner = SELF.match(requirement.replace(" ", ""))
            if inner:
                todo.extend(inner.group(1).split(","))
            elif requirement not in out:
                out.append(requirement)
    return out


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
