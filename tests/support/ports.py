"""Loopback ports for tests."""

from __future__ import annotations

import socket


def unused_port() -> int:
    """A loopback port nobody listens on (bound once by the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
