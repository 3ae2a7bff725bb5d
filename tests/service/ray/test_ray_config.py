"""configs/ray/serve.yaml (for `serve run` / `serve deploy` / KubeRay) passes Ray Serve's own config schema, and
its import path builds the application with its options (nothing deployed: no Ray cluster is started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service.ray.conftest import require_ray

require_ray()

from ray._common.utils import import_attr  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "ray" / "serve.yaml"


def application(args: dict[str, Any]) -> Any:
    [app] = yaml.safe_load(CONFIG.read_text())["applications"]
    return import_attr(app["import_path"])(args)


def test_config_passes_ray_serve_schema_and_builds_the_deployment(tiny_token_classifier_dir: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(config)
    [app] = config["applications"]
    deployment = application({**app["args"], "model": str(tiny_token_classifier_dir)})._bound_deployment
    assert deployment.num_replicas == app["args"]["replicas"]
    assert deployment.ray_actor_options["num_gpus"] == app["args"]["gpus_per_replica"]
    assert deployment.ray_actor_options["num_cpus"] == app["args"]["cpus_per_replica"]


def test_autoscaling_options_reach_ray(tiny_token_classifier_dir: Path) -> None:
    deployment = application({"model": str(tiny_token_classifier_dir), "min_replicas": 1, "max_replicas": 4,
                              "replicas": 2, "target_ongoing_requests": 8})._bound_deployment
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.initial_replicas) == (1, 4, 2)
    assert autoscaling.target_ongoing_requests == 8


def test_bad_args_are_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_replicas"):
        application({"model": str(tmp_path), "min_replicas": 3, "max_replicas": 2})
