"""deploy/k8s/: every manifest passes Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: no unknown
field), and the pieces fit together (probes, GPU, models volume, Service selector, HPA metric). Nothing here
applies them to a cluster. kubernetes-validate is installed by `.ci/engines.sh ray`; without it these skip,
except under TLCR_REQUIRE_ENGINES=1."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integrations.conftest import engine

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes still commonly run (autoscaling/v2 is GA since 1.23) and the validator's newest.
VERSIONS = ("1.30.0", "1.37.0")

kubernetes_validate: Any = engine("kubernetes_validate")


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource the kustomization lists, by kind."""
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    resources = [yaml.safe_load((K8S / name).read_text()) for name in listed]
    return {resource["kind"]: resource for resource in resources}


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(manifests()) == {"PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_the_kubernetes_schema(version: str) -> None:
    for resource in manifests().values():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(manifests()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_probes_gpu_volume_service_and_autoscaler_fit_together() -> None:
    m = manifests()
    deployment, pod = m["Deployment"], m["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    [mount] = container["volumeMounts"]
    assert env["TLCR_MODEL"].startswith(mount["mountPath"] + "/")
    [volume] = pod["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == m["PersistentVolumeClaim"]["metadata"]["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert m["Service"]["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert m["Service"]["spec"]["ports"][0]["targetPort"] in ports
    hpa = m["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    from tlcr.service.metrics import ServiceMetrics

    assert hpa["metrics"][0]["pods"]["metric"]["name"] in ServiceMetrics().render().decode()
