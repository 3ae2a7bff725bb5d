"""core.logs.setup_logging and the global `tlcr -v/-q` flags."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.exit_codes import ExitCode
from tlcr.core.logs import HANDLER_NAME, OUR_PACKAGES, package_level, setup_logging, verbosity_of_level


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in OUR_PACKAGES)]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_levels_of_our_packages_and_of_other_libraries(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(0)
    logging.getLogger("tlcr.trainer.ppo").info("step 1")
    logging.getLogger("tlcr.service.client").debug("retry detail")
    logging.getLogger("httpx").info("HTTP Request: POST /token_rewards")
    logging.getLogger("httpx").warning("a library warning")
    err = capsys.readouterr().err
    assert "INFO tlcr.trainer.ppo: step 1" in err and "a library warning" in err
    assert "retry detail" not in err and "HTTP Request" not in err

    setup_logging(-1)
    logging.getLogger("tlcr.trainer.ppo").info("step 2")
    logging.getLogger("tlcr.labeling.worker").warning("cut a partial line")
    logging.getLogger("httpx").warning("quiet library warning")
    err = capsys.readouterr().err
    assert "step 2" not in err and "cut a partial line" in err and "quiet library warning" not in err

    setup_logging(2)
    logging.getLogger("tlcr.service.client").debug("retry detail")
    logging.getLogger("httpx").debug("library debug")
    err = capsys.readouterr().err
    assert "retry detail" in err and "library debug" in err


def test_a_second_setup_replaces_the_handler_instead_of_doubling_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(0)
    setup_logging(0)
    assert [h.name for h in logging.getLogger().handlers].count(HANDLER_NAME) == 1
    logging.getLogger("tlcr.trainer").info("once")
    assert capsys.readouterr().err.count("once") == 1


def test_log_level_names_map_to_verbosities() -> None:
    assert [package_level(verbosity_of_level(name)) for name in ("DEBUG", "info", "warning", "error", "critical")] \
        == [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.ERROR]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        verbosity_of_level("loud")


def test_global_flags_set_every_subcommands_level(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    assert runner.invoke(app, ["-q", "data", "--output-file", str(out), "--data-limit", "4"]).exit_code == ExitCode.OK
    assert all(logging.getLogger(name).level == logging.WARNING for name in OUR_PACKAGES)
    assert runner.invoke(app, ["-vv", "data", "--output-file", str(out), "--data-limit", "4"]).exit_code == ExitCode.OK
    assert logging.getLogger("tlcr").level == logging.DEBUG and logging.getLogger().level == logging.DEBUG
    both = runner.invoke(app, ["-v", "-q", "data", "--output-file", str(out)])
    assert both.exit_code == ExitCode.BAD_INPUT and "not both" in both.output
