"""One logging setup for every command: our packages' messages at one level, third-party libraries quieter.

`verbosity` is what the global `tlcr --verbose/-v` and `--quiet/-q` flags count (each `-v` adds one, each `-q`
takes one away): -2 errors only, -1 warnings, 0 our progress messages (INFO), 1 our debug messages, 2 everything
at DEBUG including third-party libraries. Loggers are named after their modules (`logging.getLogger(__name__)`),
so the first part of a name is the package that logged it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console

OUR_PACKAGES = ("tlcr",)  # every module lives under the one namespace
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSITY_KEY = "tlcr.verbosity"  # click context meta: the global -v/-q count, absent when neither was given
HANDLER_NAME = "tlcr"  # marks the handler installed here, so a second setup replaces it instead of doubling lines


def package_level(verbosity: int) -> int:
    """The level of our own packages' loggers."""
    return {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(clamp(verbosity), logging.DEBUG)


def library_level(verbosity: int) -> int:
    """The level of everything else (httpx, for one, logs a line per request at INFO)."""
    return {-2: logging.ERROR, -1: logging.ERROR, 2: logging.DEBUG}.get(clamp(verbosity), logging.WARNING)


def clamp(verbosity: int) -> int:
    return max(-2, min(2, verbosity))


def verbosity_of_level(level_name: str) -> int:
    """The verbosity whose package level is `level_name` (debug, info, warning, error, critical; any case)."""
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {level_name!r}: use debug, info, warning, error or critical")
    return 1 if level <= logging.DEBUG else 0 if level <= logging.INFO else -1 if level <= logging.WARNING else -2


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted (test runners swap it per invocation)."""

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(verbosity: int = 0, *, console: Console | None = None) -> None:
    """Configure logging for a command run at `verbosity`; `console`: show records on that rich console.

    Replaces the handler a previous call installed and leaves other handlers (pytest's, a library's) alone.
    """
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=False)
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
    handler.name = HANDLER_NAME
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Other libraries' loggers inherit the root's level; ours have their own (a record propagating to the
    # root's handler is not checked against the root's level again).
    root.setLevel(library_level(verbosity))
    for name in OUR_PACKAGES:
        logging.getLogger(name).setLevel(package_level(verbosity))
    _set_transformers_level(library_level(verbosity))


def _set_transformers_level(level: int) -> None:
    # transformers logs through its own handler (not the root's) at a level it reads from TRANSFORMERS_VERBOSITY
    # when first imported; setting the variable also reaches child processes (the demo's reward service).
    name = logging.getLevelName(level).lower()
    os.environ["TRANSFORMERS_VERBOSITY"] = name
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(level)
