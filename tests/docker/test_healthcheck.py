"""docker/healthcheck.py (the service image's HEALTHCHECK) against a real HTTP server on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import processes

HEALTHCHECK = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"


class ReadyzServer:
    """Answers GET /readyz with `status`; records the Authorization header of each request."""

    def __init__(self) -> None:
        self.status = 200
        self.authorizations: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.authorizations.append(self.headers.get("Authorization"))
                code = outer.status if self.path == "/readyz" else 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def readyz() -> Iterator[ReadyzServer]:
    server = ReadyzServer()
    yield server
    server.close()


def run_healthcheck(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return processes.run([sys.executable, str(HEALTHCHECK)], env={"TLCR_PORT": str(port), **env}, timeout=30)


def test_ready_service_is_healthy(readyz: ReadyzServer) -> None:
    result = run_healthcheck(readyz.port)
    assert result.returncode == 0, result.stderr
    assert readyz.authorizations == [None]


def test_loading_service_is_not_healthy(readyz: ReadyzServer) -> None:
    readyz.status = 503
    result = run_healthcheck(readyz.port)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{readyz.port}/readyz: HTTP 503" in result.stderr


def test_no_listener_is_not_healthy(readyz: ReadyzServer) -> None:
    port = readyz.port
    readyz.close()
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}/readyz" in result.stderr


def test_api_key_is_sent_from_the_environment_or_its_file(readyz: ReadyzServer, tmp_path: Path) -> None:
    assert run_healthcheck(readyz.port, TLCR_API_KEY="k1").returncode == 0
    key_file = tmp_path / "key"
    key_file.write_text("k2\n")
    assert run_healthcheck(readyz.port, TLCR_API_KEY_FILE=str(key_file)).returncode == 0
    assert readyz.authorizations == ["Bearer k1", "Bearer k2"]


def test_unreadable_key_file_is_named(readyz: ReadyzServer, tmp_path: Path) -> None:
    result = run_healthcheck(readyz.port, TLCR_API_KEY_FILE=str(tmp_path / "absent"))
    assert result.returncode == 1
    assert "TLCR_API_KEY_FILE=" in result.stderr and "absent" in result.stderr
