"""`tlcr serve-ray`'s options (tlcr.service.ray_settings) and its command line where Ray is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tlcr.service.ray_settings import RayServeSettings
from tlcr.service.settings import ServiceSettings


def test_every_serve_option_is_a_serve_ray_option_and_reaches_the_replicas(tmp_path: Path) -> None:
    assert set(ServiceSettings.model_fields) <= set(RayServeSettings.model_fields)
    settings = RayServeSettings(model=str(tmp_path), replicas=3, max_items_per_request=8, api_key="k",
                                truncation="prompt_left")
    replica = settings.service_settings()
    assert type(replica) is ServiceSettings
    assert (replica.max_items_per_request, replica.truncation, replica.model) == (8, "prompt_left", str(tmp_path))
    assert replica.api_key is not None and replica.api_key.get_secret_value() == "k"


@pytest.mark.parametrize(("options", "message"), [
    ({"min_replicas": 1}, "needs both --min-replicas and --max-replicas"),
    ({"min_replicas": 3, "max_replicas": 2}, r"min_replicas \(3\) exceeds max_replicas \(2\)"),
    ({"min_replicas": 2, "max_replicas": 4, "replicas": 1}, r"replicas \(1\) must lie between"),
    ({"replicas": 0}, "replicas"),
    ({"gpus_per_replica": -1}, "gpus_per_replica"),
    ({"fd": 3}, "--fd is an option of `tlcr serve` only"),
])
def test_inconsistent_deployment_options_are_refused_naming_them(tmp_path: Path, options: dict[str, object],
                                                                 message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RayServeSettings(model=str(tmp_path), **options)


def test_autoscaling_is_on_only_with_both_bounds(tmp_path: Path) -> None:
    assert not RayServeSettings(model=str(tmp_path)).autoscaling
    assert RayServeSettings(model=str(tmp_path), min_replicas=1, max_replicas=4).autoscaling


def test_command_refuses_bad_options_before_starting_ray(tmp_path: Path) -> None:
    tlcr = Path(sys.executable).with_name("tlcr")
    run = subprocess.run([str(tlcr), "serve-ray", "--model", str(tmp_path / "missing"), "--replicas", "2"],
                         capture_output=True, text=True, timeout=120)
    if importlib.util.find_spec("ray") is None:  # the extras check answers first, with the install line
        assert run.returncode == 2 and "pip install 'tlcr[service,ray]'" in run.stderr
    else:
        assert run.returncode == 2 and "does not exist" in run.stderr
