"""`tlcr serve` / `python -m tlcr.service`: options derived from ServiceSettings, TLCR_* environment, --config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.support import processes
from tlcr.cli import app
from tlcr.core.config_cli import config_command
from tlcr.core.exit_codes import ExitCode
from tlcr.service.settings import ServiceSettings


def settings_from_args(args: list[str]) -> ServiceSettings:
    """The settings `tlcr serve ARGS` would serve with: its options, parsed by the same derivation."""
    parse_only = typer.Typer()
    parse_only.command()(config_command(ServiceSettings)(lambda config: config))
    settings = typer.main.get_command(parse_only).main(args, standalone_mode=False)
    assert isinstance(settings, ServiceSettings), settings
    return settings


def test_serve_help_lists_flags_with_their_environment_variables() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
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
    assert unknown.exit_code == 2 and "No such option: --max-queue" in unknown.output
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
    # A fresh process: a uvicorn started earlier in this one (other tests) keeps the handlers it installed.
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    result = processes.run([sys.executable, "-m", "tlcr.cli", "-v", "serve", "--model", str(not_a_checkpoint),
                            "--port", "0", "--log-level", "warning"], timeout=120)
    assert result.returncode == ExitCode.BAD_INPUT
    assert "INFO uvicorn.error: Started server process" in result.stderr  # one format for uvicorn's lines too


def test_unknown_log_level_is_refused() -> None:
    result = CliRunner().invoke(app, ["serve", "--model", "m", "--log-level", "loud"])
    assert result.exit_code == ExitCode.BAD_INPUT and "unknown log level 'loud'" in result.output


def test_a_config_file_under_environment_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("model: from-file\nport: 9100\nmax_wait_ms: 3\ntoken_budget: 512\n")
    monkeypatch.setenv("TLCR_PORT", "9101")
    settings = settings_from_args(["--config", str(config), "--token-budget", "1024"])
    assert (settings.model, settings.port, settings.max_wait_ms, settings.token_budget) \
        == ("from-file", 9101, 3.0, 1024)
    config.write_text("model: m\nmax_queue: 3\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "unknown key(s) 'max_queue'" in result.output


def test_python_m_service_has_the_same_options(tmp_path: Path) -> None:
    help_text = processes.run([sys.executable, "-m", "tlcr.service", "--help"], timeout=120,
                              check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    assert "python -m tlcr.service" in help_text and "--max-items-per-request" in help_text
    missing = processes.run([sys.executable, "-m", "tlcr.service", "--model", str(tmp_path / "missing")],
                            timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_a_missing_policy_tokenizer_directory_is_refused_at_startup(tiny_token_classifier_dir: Path,
                                                                    tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="get_reward_policy_tokenizer"):
        ServiceSettings(model=str(tiny_token_classifier_dir), get_reward_policy_tokenizer=str(tmp_path / "nope"))
