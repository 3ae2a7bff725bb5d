"""`tlcr serve` (and `python -m tlcr.service`): run the reward service under uvicorn.

The options are `ServiceSettings`'s fields (core.config_cli derives them, with TLCR_* environment variables and
`--config FILE.yaml`), so there is one definition of every option; `tlcr serve --help` lists them.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.exit_codes import ExitCode
from tlcr.core.logs import VERBOSITY_KEY, package_level, setup_logging, verbosity_of_level
from tlcr.service.settings import ServiceSettings

log = logging.getLogger(__name__)
PARENT_POLL_S = 0.5


def stop_when_orphaned(parent_pid: int) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM (a graceful stop) once `parent_pid` is no longer its
    parent: the parent exited, however it died, and this process was handed to another."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        log.warning("the process that started this service (pid %d) has exited: stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def run(settings: ServiceSettings, verbosity: int | None = None) -> ExitCode:
    """Serve until SIGINT/SIGTERM (graceful: requests in flight finish).

    `verbosity`: the global `tlcr -v/-q` count when given, which wins over --log-level (TLCR_LOG_LEVEL).
    Exit code BAD_INPUT if a checkpoint could not be loaded, FAILURE if loading failed otherwise.
    """
    import uvicorn

    from tlcr.core.models import ModelLoadError
    from tlcr.service.app import create_app

    if verbosity is None:
        verbosity = verbosity_of_level(settings.log_level)
    setup_logging(verbosity)
    log_level = logging.getLevelName(package_level(verbosity)).lower()
    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level,
        log_config=None,  # uvicorn's records go through setup_logging's handler and format
        timeout_graceful_shutdown=math.ceil(settings.graceful_timeout_s), lifespan="on",
        access_log=log_level == "debug",  # a line per request is noise at training rates
    )
    server = uvicorn.Server(config)
    if settings.parent_pid is not None:
        stop_when_orphaned(settings.parent_pid)
    if settings.fd is not None:
        # Not uvicorn's own fd option: it wraps the descriptor as AF_UNIX, so asyncio never sets
        # TCP_NODELAY on accepted connections and Nagle + delayed ACKs add ~40 ms to every response.
        # socket(fileno=...) detects the real family.
        server.run(sockets=[socket.socket(fileno=settings.fd)])
    elif settings.port == 0:
        server.run(sockets=[config.bind_socket()])  # bound first, so uvicorn's log names the real port
    else:
        server.run()
    if not failures:
        return ExitCode.OK
    return ExitCode.BAD_INPUT if isinstance(failures[0], ModelLoadError) else ExitCode.FAILURE


def serve(ctx: typer.Context, config: ServiceSettings) -> None:
    """Serve token rewards over HTTP: POST /token_rewards, /get_reward, /sequence_rewards; GET / heatmap.

    Needs --model (a discriminator checkpoint). Every option can also come from its TLCR_* environment
    variable or a --config YAML file (flags win over the environment, which wins over the file).
    """
    raise typer.Exit(run(config, ctx.meta.get(VERBOSITY_KEY)))


serve_command = config_command(ServiceSettings)(serve)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def main(args: Sequence[str] | None = None) -> None:
    """`python -m tlcr.service ARGS`: the same options as `tlcr serve` (without the global -v/-q); exits."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve_command)
    app(args, prog_name="python -m tlcr.service")
