"""docker/entrypoint.sh, run with sh on this machine: secret files, the `tlcr` prefix, the missing-model stop.

A stand-in `tlcr` on PATH prints its arguments, so each test sees exactly what the entrypoint would exec.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"


@pytest.fixture()
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    fake = directory / "tlcr"
    fake.write_text('#!/bin/sh\nprintf "tlcr"; printf " [%s]" "$@"; echo\n')
    fake.chmod(0o755)
    return directory


def run_entrypoint(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=environment, capture_output=True, text=True,
                          timeout=30, check=False)


def test_subcommand_gets_tlcr_prefix(bin_dir: Path) -> None:
    result = run_entrypoint(bin_dir, "ppo", "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tlcr [ppo] [--steps] [2]"


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
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
