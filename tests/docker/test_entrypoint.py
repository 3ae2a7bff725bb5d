"""docker/entrypoint.sh, run with sh on this machine: secret files, the `tlcr` prefix, which model `tlcr serve`
gets (configured, /models/discriminator or the demo model), the missing-model stop and the compose bootstrap.

A stand-in `tlcr` on PATH prints its arguments (and TLCR_MODEL on stderr), so each test sees exactly what
the entrypoint would exec.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import processes

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"


@pytest.fixture()
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    fake = directory / "tlcr"
    fake.write_text('#!/bin/sh\nprintf "tlcr"; printf " [%s]" "$@"; echo\necho "TLCR_MODEL=${TLCR_MODEL-unset}" >&2\n')
    fake.chmod(0o755)
    return directory


def run_entrypoint(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    return processes.run(["sh", str(ENTRYPOINT), *args], env=environment, timeout=30)


def test_subcommand_gets_tlcr_prefix(bin_dir: Path) -> None:
    result = run_entrypoint(bin_dir, "ppo", "--num-steps", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tlcr [ppo] [--num-steps] [2]"


def test_no_arguments_shows_help(bin_dir: Path) -> None:
    result = run_entrypoint(bin_dir)
    assert result.stdout.strip() == "tlcr [--help]"


def test_other_programs_run_as_given(bin_dir: Path) -> None:
    result = run_entrypoint(bin_dir, "sh", "-c", "echo plain")
    assert result.stdout.strip() == "plain"


def test_api_key_file_sets_the_variable_and_is_dropped(bin_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "openai_key"
    secret.write_text("sk-test-123\n")
    result = run_entrypoint(bin_dir, "sh", "-c", 'printf "%s|%s" "$OPENAI_API_KEY" "${OPENAI_API_KEY_FILE-unset}"',
                            OPENAI_API_KEY_FILE=str(secret))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sk-test-123|unset"


def test_token_file_too_but_not_other_file_variables(bin_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "hf"
    secret.write_text("hf_abc")
    result = run_entrypoint(bin_dir, "sh", "-c", 'printf "%s|%s" "$HF_TOKEN" "$TLCR_LOG_FILE"',
                            HF_TOKEN_FILE=str(secret), TLCR_LOG_FILE="/tmp/x.log")
    assert result.stdout == "hf_abc|/tmp/x.log"


def test_missing_secret_file_is_named(bin_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_entrypoint(bin_dir, "true", TLCR_API_KEY_FILE=str(missing))
    assert result.returncode == 2
    assert f"TLCR_API_KEY_FILE={missing}: file not found or not readable" in result.stderr


def test_secret_given_twice_is_refused(bin_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("a")
    result = run_entrypoint(bin_dir, "true", TLCR_API_KEY="b", TLCR_API_KEY_FILE=str(secret))
    assert result.returncode == 2
    assert "both TLCR_API_KEY and TLCR_API_KEY_FILE are set" in result.stderr


def test_serve_without_mounted_model_stops_with_the_fix(bin_dir: Path, tmp_path: Path) -> None:
    absent = tmp_path / "models" / "discriminator"
    result = run_entrypoint(bin_dir, "tlcr", "serve", TLCR_MODEL=str(absent))
    assert result.returncode == 2
    assert f"no model at {absent} inside the container" in result.stderr
    assert "docs/docker.md" in result.stderr
    assert result.stdout == ""  # tlcr was never started


@pytest.mark.parametrize("flag", [["--model", "{path}"], ["--model={path}"]])
def test_model_flag_wins_over_environment(bin_dir: Path, tmp_path: Path, flag: list[str]) -> None:
    present = tmp_path / "ckpt"
    present.mkdir()
    args = [part.format(path=present) for part in flag]
    ok = run_entrypoint(bin_dir, "serve", *args, TLCR_MODEL=str(tmp_path / "absent"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("tlcr [serve]")
    absent = [part.format(path=tmp_path / "absent") for part in flag]
    refused = run_entrypoint(bin_dir, "serve", *absent, TLCR_MODEL=str(present))
    assert refused.returncode == 2
    assert f"no model at {tmp_path / 'absent'}" in refused.stderr


def test_hub_ids_are_not_checked(bin_dir: Path) -> None:
    result = run_entrypoint(bin_dir, "serve", TLCR_MODEL="org/discriminator-7b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tlcr [serve]"


def test_entrypoint_is_posix_sh() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    processes.run(["sh", "-n", str(ENTRYPOINT)], check=True, timeout=30)


@pytest.fixture()
def models(tmp_path: Path) -> dict[str, str]:
    """TLCR_DEFAULT_MODEL / TLCR_DEMO_DIR pointing into an empty models folder (what /models is in compose)."""
    root = tmp_path / "models"
    root.mkdir()
    return {"TLCR_DEFAULT_MODEL": str(root / "discriminator"), "TLCR_DEMO_DIR": str(root / "demo")}


def make_demo(models: dict[str, str]) -> Path:
    discriminator = Path(models["TLCR_DEMO_DIR"]) / "discriminator"
    discriminator.mkdir(parents=True)
    (discriminator / "config.json").write_text("{}")
    return discriminator


def test_serve_prefers_the_default_checkpoint_over_the_demo(bin_dir: Path, models: dict[str, str]) -> None:
    make_demo(models)
    Path(models["TLCR_DEFAULT_MODEL"]).mkdir()
    result = run_entrypoint(bin_dir, "tlcr", "serve", **models)
    assert result.returncode == 0, result.stderr
    assert f"TLCR_MODEL={models['TLCR_DEFAULT_MODEL']}" in result.stderr
    assert "DEMO" not in result.stderr


def test_serve_falls_back_to_the_demo_model_and_says_so(bin_dir: Path, models: dict[str, str]) -> None:
    demo = make_demo(models)
    result = run_entrypoint(bin_dir, "serve", TLCR_MODEL="", **models)  # compose passes an unset one as ""
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tlcr [serve]"
    assert f"TLCR_MODEL={demo}" in result.stderr
    assert "serving the offline DEMO" in result.stderr


def test_serve_with_no_model_anywhere_names_the_default_path(bin_dir: Path, models: dict[str, str]) -> None:
    result = run_entrypoint(bin_dir, "serve", **models)
    assert result.returncode == 2
    assert f"no model at {models['TLCR_DEFAULT_MODEL']} inside the container" in result.stderr
    assert "docker compose up" in result.stderr and result.stdout == ""


def test_configured_model_missing_is_never_replaced_by_the_demo(bin_dir: Path, models: dict[str, str],
                                                               tmp_path: Path) -> None:
    make_demo(models)
    Path(models["TLCR_DEFAULT_MODEL"]).mkdir()
    for args, env in ((["serve"], {"TLCR_MODEL": str(tmp_path / "absent")}),
                      (["serve", f"--model={tmp_path / 'absent'}"], {})):
        result = run_entrypoint(bin_dir, *args, **env, **models)
        assert result.returncode == 2
        assert f"no model at {tmp_path / 'absent'}" in result.stderr and result.stdout == ""


def test_bootstrap_trains_the_demo_model_when_nothing_is_configured(bin_dir: Path, models: dict[str, str]) -> None:
    result = run_entrypoint(bin_dir, "bootstrap", TLCR_MODEL="", **models)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"tlcr [bootstrap-model] [--output-dir] [{models['TLCR_DEMO_DIR']}]"
    assert "offline DEMO discriminator" in result.stdout


@pytest.mark.parametrize("configured", ["env", "default-path", "hub-id"])
def test_bootstrap_does_nothing_when_a_model_is_configured(bin_dir: Path, models: dict[str, str], tmp_path: Path,
                                                          configured: str) -> None:
    env = dict(models)
    if configured == "env":
        (tmp_path / "mine").mkdir()
        env["TLCR_MODEL"] = str(tmp_path / "mine")
    elif configured == "hub-id":
        env["TLCR_MODEL"] = "org/discriminator-7b"
    else:
        Path(models["TLCR_DEFAULT_MODEL"]).mkdir()
    result = run_entrypoint(bin_dir, "bootstrap", **env)
    assert result.returncode == 0, result.stderr
    assert "no demo model needed" in result.stdout
    assert "tlcr [" not in result.stdout  # nothing was trained


def test_bootstrap_stops_on_a_configured_model_that_is_missing(bin_dir: Path, models: dict[str, str],
                                                               tmp_path: Path) -> None:
    result = run_entrypoint(bin_dir, "bootstrap", TLCR_MODEL=str(tmp_path / "absent"), **models)
    assert result.returncode == 2
    assert f"no model at {tmp_path / 'absent'} inside the container" in result.stderr
    assert "tlcr [" not in result.stdout
