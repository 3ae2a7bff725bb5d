"""The `tlcr` console command's entry point: checks the subcommand's extra, then hands over to the typer app.

It imports only the standard library until the check has passed, so the base install (`pip install tlcr`,
the HTTP client only) answers every subcommand with the extra to install (exit 2) instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tlcr.extras import COMMAND_EXTRAS, extra_of_module, install_line, missing_extra_message, missing_modules

BAD_INPUT = 2  # tlcr.core.exit_codes.ExitCode.BAD_INPUT; that module is not imported before the check
GLOBAL_FLAGS = {"-v", "-vv", "-q", "-qq", "--verbose", "--quiet"}
HELP_FLAGS = {"--help", "-h"}


def subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand's name in `argv` (after any global -v/-q flags); None when there is none."""
    for arg in argv:
        if arg in GLOBAL_FLAGS:
            continue
        return None if arg.startswith("-") else arg
    return None


def base_usage() -> str:
    commands = "\n".join(f"  {name:<20} {install_line(extras)}" for name, extras in COMMAND_EXTRAS.items())
    return ("Usage: tlcr [-v|-q] COMMAND [OPTIONS]\n\n"
            "This is the base install of tlcr: the reward service's HTTP client (tlcr.service.client).\n"
            f"Each command needs an extra:\n{commands}\n")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = subcommand(args)
    wants_help = any(a in HELP_FLAGS for a in args)
    if command in COMMAND_EXTRAS and not wants_help:
        extras = COMMAND_EXTRAS[command]
        missing = missing_modules(extras)
        if missing:
            print(missing_extra_message(command, extras, missing), file=sys.stderr)
            sys.exit(BAD_INPUT)
    if missing_modules(()):  # not even the command line's own packages (typer, pyyaml): the base install
        print(base_usage(), file=sys.stdout if wants_help or command is None else sys.stderr, end="")
        sys.exit(0 if wants_help or command is None else BAD_INPUT)
    try:
        from tlcr.cli import app

        app(args=args, prog_name="tlcr")
    except ModuleNotFoundError as exc:  # an import the extras table does not list: still a clear message
        extra = extra_of_module(exc.name or "")
        if extra is None:
            raise
        print(f"error: `tlcr {command or ''}` imports {exc.name}, which is not installed. "
              f"Install it with: {install_line((extra,))}", file=sys.stderr)
        sys.exit(BAD_INPUT)
