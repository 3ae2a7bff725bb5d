"""`tlcr serve` / `python -m service`: flags and TLCR_* environment through pydantic-settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.exit_codes import ExitCode
from service.settings import ServiceSettings, settings_from_args
from tlcr.cli import app


def test_serve_help_lists_flags_with_their_environment_variables() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--model", "--sequence-model", "--api-key", "--max-queue-items", "--token-budget",
                 "--max-wait-ms", "--truncation", "--max-body-bytes", "TLCR_MAX_ITEMS_PER_REQUEST"):
        assert flag in result.output


def test_flags_override_environment_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCR_PORT", "9001")
    monkeypatch.setenv("TLCR_MAX_WAIT_MS", "7.5")
    monkeypatch.setenv("TLCR_API_KEY", "from-env")
    settings = settings_from_args(["--model", "m", "--port", "9002", "--no-warmup", "--default-mode", "fixed"])
    assert settings.port == 9002 and settings.max_wait_ms == 7.5 and settings.warmup is False
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
    assert settings.default_mode.value == "fixed" and settings.token_budget == ServiceSettings.model_fields[
        "token_budget"].default


def test_empty_api_key_variable_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCR_API_KEY", "")
    assert settings_from_args(["--model", "m"]).api_key is None


def test_bad_flags_exit_2_naming_the_problem(capsys: pytest.CaptureFixture[str]) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["serve", "--model", "m", "--max-queue", "3"])
    assert unknown.exit_code == 2 and "unrecognized arguments: --max-queue" in unknown.output
    inconsistent = runner.invoke(app, ["serve", "--model", "m", "--max-items-per-request", "3000",
                                       "--api-key", "hidden-key"])
    assert inconsistent.exit_code == 2
    assert "max_items_per_request (3000) must not exceed max_queue_items" in inconsistent.output
    assert "hidden-key" not in inconsistent.output  # errors never echo inputs (the key could be one)
    bad_dtype = runner.invoke(app, ["serve", "--model", "m", "--dtype", "fp8"])
    assert bad_dtype.exit_code == 2 and "dtype" in bad_dtype.output


def test_missing_local_checkpoint_is_refused_before_loading(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_serve_exits_2_when_the_checkpoint_cannot_load(tmp_path: Path) -> None:
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    result = CliRunner().invoke(app, ["serve", "--model", str(not_a_checkpoint), "--port", "0",
                                      "--log-level", "warning"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "holds no tokenizer" in result.output and "Started server process" not in result.output


def test_global_verbosity_wins_over_log_level(tmp_path: Path) -> None:
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    result = CliRunner().invoke(app, ["-v", "serve", "--model", str(not_a_checkpoint), "--port", "0",
                                      "--log-level", "warning"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "INFO uvicorn.error: Started server process" in result.output  # one format for uvicorn's lines too


def test_unknown_log_level_is_refused() -> None:
    result = CliRunner().invoke(app, ["serve", "--model", "m", "--log-level", "loud"])
    assert result.exit_code == ExitCode.BAD_INPUT and "unknown log level 'loud'" in result.output
