"""The compose files, the Dockerfile, .env.example and .dockerignore agree with each other and with the CLI.

These run without a Docker engine; docker/smoke.sh checks the same files end to end where one runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.support.package_layout import package_dirs
from tlcr.cli import app

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


class ComposeLoader(yaml.SafeLoader):
    """Safe YAML plus Compose's merge tags (`!reset` clears a value in an override file)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: {"!reset": True})


def load_compose(name: str) -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(encoding="utf-8"), Loader=ComposeLoader)


def interpolate_defaults(text: str) -> str:
    """What Compose substitutes when no variable is set: each ${VAR:-default} becomes its default."""
    return VARIABLE.sub(lambda match: match.group("default") or "", text)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an override file: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge(base[key], value) if both_maps else value
    return merged


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_default_up_reserves_a_gpu_for_the_service_and_trainer() -> None:
    services = load_compose("docker-compose.yml")["services"]
    for name in ("reward", "trainer"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["labeling"]
    assert "profiles" not in services["reward"]  # plain `docker compose up` starts it
    assert services["labeling"]["profiles"] == ["labeling"] and services["trainer"]["profiles"] == ["trainer"]


def test_cpu_override_drops_the_gpu_and_changes_base_and_torch() -> None:
    cpu = load_compose("docker-compose.cpu.yml")["services"]
    assert cpu["reward"]["deploy"] == {"!reset": True} and cpu["trainer"]["deploy"] == {"!reset": True}
    for name in ("bootstrap", "reward", "labeling", "trainer"):
        args = cpu[name]["build"]["args"]
        assert interpolate_defaults(args["BASE_IMAGE"]) == "python:3.11-slim"
        assert interpolate_defaults(args["TORCH_INDEX_URL"]) == "https://download.pytorch.org/whl/cpu"
        assert interpolate_defaults(cpu[name]["image"]).endswith(":cpu")


def test_jobs_reach_the_service_by_its_compose_name_once_healthy() -> None:
    services = load_compose("docker-compose.yml")["services"]
    assert "--reward-url=http://reward:8000" in services["trainer"]["command"]
    assert services["trainer"]["depends_on"] == {"reward": {"condition": "service_healthy"}}
    assert services["reward"]["volumes"] == ["${TLCR_MODELS_DIR:-models}:/models:ro"]
    assert set(load_compose("docker-compose.yml")["volumes"]) == {"models", "data", "runs"}


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]])
def test_bootstrap_runs_once_before_the_service_in_the_trainer_image(files: list[str]) -> None:
    services: dict[str, Any] = {}
    for name in files:
        services = merge(services, load_compose(name)["services"])
    bootstrap, reward, trainer = services["bootstrap"], services["reward"], services["trainer"]
    # Training the demo model needs tlcr[train]; the service image carries tlcr[service] only.
    assert bootstrap["image"] == trainer["image"] and bootstrap["build"] == trainer["build"]
    assert bootstrap["build"]["target"] == "trainer" and reward["build"]["target"] == "service"
    assert bootstrap["command"] == ["bootstrap"]  # docker/entrypoint.sh's one-shot step
    assert bootstrap["restart"] == "no" and "profiles" not in bootstrap and "deploy" not in bootstrap
    assert bootstrap["healthcheck"] == {"disable": True}  # the image's HEALTHCHECK probes the service
    # It writes the demo model into the volume the service reads; both see the same TLCR_MODEL (unset: "").
    assert bootstrap["volumes"] == ["${TLCR_MODELS_DIR:-models}:/models"]
    assert bootstrap["environment"]["TLCR_MODEL"] == reward["environment"]["TLCR_MODEL"] == "${TLCR_MODEL:-}"
    # A bootstrap that fails (a configured model is missing) keeps the service from starting at all,
    # instead of leaving it to exit and restart in a loop.
    assert reward["depends_on"] == {"bootstrap": {"condition": "service_completed_successfully"}}


def test_default_ppo_job_is_the_one_the_bootstrap_writes() -> None:
    from tlcr.demo_model import FILES

    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text(encoding="utf-8")
    demo_dir = re.search(r"^demo_dir=\$\{TLCR_DEMO_DIR:-(\S+)\}$", entrypoint, re.MULTILINE)
    assert demo_dir
    trainer = load_compose("docker-compose.yml")["services"]["trainer"]
    command = [interpolate_defaults(part) for part in trainer["command"]]
    assert f"--config={demo_dir.group(1)}/ppo.yaml" in command and "ppo.yaml" in FILES


def test_service_is_published_on_loopback_by_default() -> None:
    ports = load_compose("docker-compose.yml")["services"]["reward"]["ports"]
    assert [interpolate_defaults(port) for port in ports] == ["127.0.0.1:8000:8000"]


def test_env_file_is_optional_and_not_committed() -> None:
    services = load_compose("docker-compose.yml")["services"]
    for service in services.values():
        assert service["env_file"] == [{"path": "${TLCR_ENV_FILE:-.env}", "required": False}]
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("service", ["labeling", "trainer"])
def test_default_commands_parse_with_the_real_cli(service: str) -> None:
    command = load_compose("docker-compose.yml")["services"][service]["command"]
    assert command[0] == "tlcr"
    args = [interpolate_defaults(part) for part in command[1:]]
    # click rejects an unknown option before it acts on --help, so this fails when a flag drifts.
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    drifted = CliRunner().invoke(app, [*args, "--no-such-option=1", "--help"])
    assert drifted.exit_code == 2


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set()
    for name in ("docker-compose.yml", "docker-compose.cpu.yml"):
        used |= {match.group("name") for match in VARIABLE.finditer((ROOT / name).read_text(encoding="utf-8"))}
    undocumented = used - env_example_names() - {"TLCR_ENV_FILE"}  # TLCR_ENV_FILE: set by the smoke test
    assert not undocumented, f".env.example lacks {sorted(undocumented)}"


def test_defaults_agree_between_dockerfile_compose_and_env_example() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    torch = re.search(r"^ARG TORCH_SPEC=(\S+)$", dockerfile, re.MULTILINE)
    assert base and torch
    args = load_compose("docker-compose.yml")["x-build"]["args"]
    assert interpolate_defaults(args["BASE_IMAGE"]) == base.group(1)
    assert interpolate_defaults(args["TORCH_SPEC"]) == torch.group(1)
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert f"TLCR_BASE_IMAGE={base.group(1)}\n" in example
    assert f"TLCR_TORCH_SPEC={torch.group(1)}\n" in example


def test_dockerfile_targets_user_healthcheck_and_volumes() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE)
    assert {"service", "labeling", "trainer"} <= set(stages)
    service = dockerfile.split("AS service", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^HEALTHCHECK .*CMD \[\"tlcr-healthcheck\"\]$", service, re.MULTILINE)
    assert re.search(r"^USER tlcr$", dockerfile, re.MULTILINE)
    provision = (ROOT / "docker" / "provision.sh").read_text(encoding="utf-8")
    assert "mkdir -p /models /data /runs\nchown tlcr:tlcr /models /data /runs" in provision
    for arg in ("BASE_IMAGE", "EXTRA_CA_CERTS", "WHEELS", "TORCH_SPEC"):
        assert re.search(rf"^ARG {arg}=", dockerfile, re.MULTILINE), arg
    compose_targets = {s["build"]["target"] for s in load_compose("docker-compose.yml")["services"].values()}
    assert compose_targets == {"service", "labeling", "trainer"}


def test_build_context_allows_every_package_and_the_build_folders() -> None:
    packages = sorted(set(package_dirs().values()))  # the folders mapped into the tlcr namespace
    assert packages
    allowed = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    assert "*" in allowed  # an allow-list: everything else (models/, data/, .venv) stays out
    missing = [name for name in [*packages, "docker"] if f"!{name}/" not in allowed]
    assert not missing, f".dockerignore does not let {missing} into the build context"
    assert "!pyproject.toml" in allowed
    assert (ROOT / "docker" / "certs").is_dir() and (ROOT / "docker" / "wheels").is_dir()
