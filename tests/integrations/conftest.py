"""A real TLCR service (subprocess on loopback, tiny discriminator + sequence reward model) for the engine
adapters' tests. The engines' own tests (verl, OpenRLHF) run in their own virtual environments
(.ci/engine-venvs.sh) and are skipped where the engine is not installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.launcher import ServiceProcess, start_service


@pytest.fixture(scope="session")
def tlcr_service(tiny_token_classifier_dir: Path, sequence_rm_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("logs") / "integrations-service.log"
    with start_service(tiny_token_classifier_dir, sequence_model=sequence_rm_dir, log_path=log,
                       extra_args=["--torch-threads", "1", "--max-wait-ms", "2"]) as service:
        yield service


def engine(module: str) -> object:
    """Import an engine module, or skip the test where it is not installed; with TLCR_REQUIRE_ENGINES=1
    (CI's engine virtual environments) a missing engine fails instead."""
    import importlib
    import os

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("TLCR_REQUIRE_ENGINES") == "1":
            raise
        pytest.skip(f"{module} is not installed here ({exc}); .ci/engine-venvs.sh builds its environment")
