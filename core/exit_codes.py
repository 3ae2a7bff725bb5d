"""The exit codes of every `tlcr` command (and `python -m tlcr.service`), documented in the README.

2 is also what click gives a bad option, so a mistyped flag and a bad data file read the same to a script.
1 is what Python gives an uncaught exception: a bug or a crash, never an expected outcome.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    """An unexpected error (a traceback): report it as a bug."""
    BAD_INPUT = 2
    """Options, data, config or checkpoints are wrong, or a remote endpoint refused a request (bad API key, unknown
    model, a 4xx): the message names the problem, and rerunning unchanged fails the same way."""
    UNAVAILABLE = 3
    """A remote endpoint (the reward service, the reviser's LLM) stayed unavailable past the retries. Work done so
    far is kept (PPO: a checkpoint; label: the records written) and rerunning the same command later resumes."""
