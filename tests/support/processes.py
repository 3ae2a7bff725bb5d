"""Waiting for processes to end, in tests (Linux /proc)."""

from __future__ import annotations

import time
from pathlib import Path


def wait_until_gone(pids: set[int], timeout_s: float = 20.0) -> set[int]:
    """The pids still alive (not zombies) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "gone"
            if state in ("gone", "Z"):
                alive.discard(pid)
        time.sleep(0.05)
    return alive
