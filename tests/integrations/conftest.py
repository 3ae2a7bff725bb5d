"""The engine adapters' tests score against `tiny_reward_service` (tests/conftest.py). The engines' own
tests (verl, OpenRLHF) run in their own virtual environments (.ci/engines.sh) and skip where the engine
is not installed."""

from __future__ import annotations

import pytest


def engine(module: str) -> object:
    """Import an engine module, or skip the test (or, called at import, the whole module) where it is not
    installed; with TLCR_REQUIRE_ENGINES=1 (CI's engine virtual environments) a missing engine fails instead."""
    import importlib
    import os

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("TLCR_REQUIRE_ENGINES") == "1":
            raise
        pytest.skip(f"{module} is not installed here ({exc}); .ci/engines.sh builds its environment",
                    allow_module_level=True)
