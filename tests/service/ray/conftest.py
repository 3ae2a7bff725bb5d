"""The Ray Serve tests run the service's contract tests against `tlcr serve-ray` on a local Ray (CPU).

They need Ray (the `ray` extra; .ci/engines.sh ray builds .venv-ray): without it they skip, except under
TLCR_REQUIRE_ENGINES=1, where they fail. Every deployment here is stopped with its whole Ray after its
module (tests.support.ray_serve), and only one runs at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integrations.conftest import engine
from tests.service.conftest import SHARED_MAX_BODY, SHARED_MAX_ITEMS
from tests.support.ray_serve import RayServe, start_ray_serve


def require_ray() -> None:
    """Skip the calling test module where Ray Serve is not installed (fail under TLCR_REQUIRE_ENGINES=1)."""
    engine("ray.serve")


def settings_args(**overrides: Any) -> list[str]:
    """ServiceSettings overrides as `tlcr serve-ray` flags (what in_process_service takes as keywords)."""
    args = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


@pytest.fixture(scope="module")
def shared_service(tiny_token_classifier_dir: Path, sequence_rm_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServe]:
    """The shared service of tests/service, with the same limits, as a one-replica Ray Serve deployment."""
    log = tmp_path_factory.mktemp("logs") / "ray-shared-service.log"
    with start_ray_serve(tiny_token_classifier_dir, log, args=[
            "--sequence-model", str(sequence_rm_dir), "--max-items-per-request", str(SHARED_MAX_ITEMS),
            "--max-body-bytes", str(SHARED_MAX_BODY), "--max-wait-ms", "2"]) as service:
        yield service


@pytest.fixture
def in_process_service(tiny_token_classifier_dir: Path, tmp_path: Path) -> Iterator[Callable[..., RayServe]]:
    """in_process_service(**settings): the tests/service fixture of the same name, as a Ray Serve deployment."""
    started: list[RayServe] = []

    def start(port: int = 0, **overrides: Any) -> RayServe:
        assert port == 0, "Ray Serve tests choose their own port"
        service = start_ray_serve(tiny_token_classifier_dir, tmp_path / f"ray-{len(started)}.log",
                                  args=settings_args(**overrides))
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
