"""`tlcr serve` (and `python -m service`): run the reward service under uvicorn.

Flags and TLCR_* environment variables are parsed by pydantic-settings from `ServiceSettings`, so there
is one definition of every option; `tlcr serve --help` lists them.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Sequence

import typer

from core.exit_codes import ExitCode
from core.logs import VERBOSITY_KEY, package_level, setup_logging, verbosity_of_level


def run(settings: object, verbosity: int | None = None) -> ExitCode:
    """Serve until SIGINT/SIGTERM (graceful: requests in flight finish).

    `verbosity`: the global `tlcr -v/-q` count when given, which wins over --log-level (TLCR_LOG_LEVEL).
    Exit code BAD_INPUT if a checkpoint could not be loaded, FAILURE if loading failed otherwise.
    """
    import uvicorn

    from service.app import create_app
    from service.settings import ServiceSettings
    from tlcr.models import ModelLoadError

    assert isinstance(settings, ServiceSettings)
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


def main(args: Sequence[str], verbosity: int | None = None) -> int:
    """Parse flags (argparse exits 2 naming a bad one) and serve."""
    from pydantic import ValidationError

    from service.settings import settings_from_args

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        # Name each bad setting without echoing inputs (one of them may be the API key).
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        typer.echo(f"error: invalid service settings: {problems}", err=True)
        return ExitCode.BAD_INPUT
    return run(settings, verbosity)


def register(app: typer.Typer) -> None:
    @app.command(
        "serve", add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def serve(ctx: typer.Context) -> None:
        """Serve token rewards over HTTP: POST /token_rewards, /get_reward, /sequence_rewards; GET / heatmap.

        Needs --model (a discriminator checkpoint). Run `tlcr serve --help` for every flag and its
        TLCR_* environment variable.
        """
        raise typer.Exit(main(ctx.args, ctx.meta.get(VERBOSITY_KEY)))
