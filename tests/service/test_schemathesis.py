"""Schemathesis, every check, against the real service on loopback: 0 failures, with and without an API key.

The statuses it accepts for data a JSON schema cannot judge are set (and explained) in schemathesis.toml.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import processes
from tlcr.service.launcher import ServiceProcess

CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis(url: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The schemathesis CLI, run in `workdir` (it writes its cache of found failures there)."""
    command = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
               "--config-file", str(CONFIG), "run", f"{url}/openapi.json", "--checks", "all",
               "--max-examples", "40", "--seed", "15", "--workers", "1", *extra]
    return processes.run(command, timeout=300, cwd=workdir)


@pytest.mark.slow
def test_schemathesis_finds_nothing_without_a_key(shared_service: ServiceProcess, tmp_path: Path) -> None:
    run = _schemathesis(shared_service.url, tmp_path)
    assert run.returncode == 0 and " passed" in run.stdout and "failed" not in run.stdout, run.stdout[-4000:]


@pytest.mark.slow
def test_schemathesis_finds_nothing_with_a_key(in_process_service: Callable[..., Any], tmp_path: Path) -> None:
    server = in_process_service(api_key="sch-key", max_body_bytes=200_000, max_items_per_request=16)
    run = _schemathesis(server.url, tmp_path, "--header", "Authorization: Bearer sch-key")
    assert run.returncode == 0 and " passed" in run.stdout and "failed" not in run.stdout, run.stdout[-4000:]
