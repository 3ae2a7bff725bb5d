"""Fixtures of the service tests: a tiny sequence reward model, a real service subprocess shared by the
session, and real uvicorn servers in threads (for apps built in-process: restarts, flaky proxies)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from tlcr.service.launcher import ServiceProcess, start_service

# The shared service's limits, small enough for the bad-input tests to reach them cheaply.
SHARED_MAX_ITEMS = 16
SHARED_MAX_BODY = 200_000


@pytest.fixture(scope="session")
def shared_service(tiny_token_classifier_dir: Path, sequence_rm_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One real service (subprocess, loopback) for every test that needs only default behaviour."""
    log = tmp_path_factory.mktemp("logs") / "shared-service.log"
    with start_service(tiny_token_classifier_dir, sequence_model=sequence_rm_dir, log_path=log,
                       extra_args=["--max-items-per-request", str(SHARED_MAX_ITEMS),
                                   "--max-body-bytes", str(SHARED_MAX_BODY), "--torch-threads", "1",
                                   "--max-wait-ms", "2"]) as service:
        yield service


class ThreadedServer:
    """A real uvicorn server on loopback, run in a thread of the test process."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("threaded uvicorn server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def serve_app() -> Iterator[Callable[..., ThreadedServer]]:
    """serve_app(app, port=0) → a started ThreadedServer; every one is stopped after the test."""
    servers: list[ThreadedServer] = []

    def start(app: Any, port: int = 0) -> ThreadedServer:
        server = ThreadedServer(app, port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.thread.is_alive():
            server.stop()


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} not ready within {timeout} s")


@pytest.fixture
def in_process_service(serve_app: Callable[..., ThreadedServer],
                       tiny_token_classifier_dir: Path) -> Callable[..., ThreadedServer]:
    """in_process_service(port=0, **settings) → the real service app under uvicorn in a thread, ready."""
    from tlcr.service.app import create_app
    from tlcr.service.settings import ServiceSettings

    def start(port: int = 0, **overrides: Any) -> ThreadedServer:
        settings = ServiceSettings(model=str(tiny_token_classifier_dir), **overrides)
        server = serve_app(create_app(settings), port)
        wait_ready(server.url)
        return server

    return start


class ProxyApp:
    """A real HTTP server in front of a real service that fails its first `failures` requests.

    A failure is an HTTP `status` with optional `headers`. `rewrite` may alter successful JSON bodies
    (to test the client's checks). `hits` counts requests.
    """

    def __init__(self, target: str, failures: int = 0, status: int = 503, headers: dict[str, str] | None = None,
                 rewrite: Callable[[Any], Any] | None = None) -> None:
        self.hits = 0
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def proxy(path: str, request: Request) -> Response:
            self.hits += 1
            if self.hits <= failures:
                return Response(b'{"detail": "injected failure"}', status_code=status, headers=headers,
                                media_type="application/json")
            async with httpx.AsyncClient(timeout=30) as http:
                upstream = await http.request(request.method, f"{target}/{path}", content=await request.body(),
                                              headers={k: v for k, v in request.headers.items()
                                                       if k.lower() in ("content-type", "authorization")})
            body = upstream.content
            if rewrite is not None and upstream.status_code == 200:
                import json

                body = json.dumps(rewrite(upstream.json())).encode()
            return Response(body, status_code=upstream.status_code, media_type="application/json",
                            headers={k: v for k, v in upstream.headers.items() if k.lower() == "retry-after"})

        self.app = app


@pytest.fixture
def proxy(serve_app: Callable[..., ThreadedServer]) -> Callable[..., tuple[ThreadedServer, ProxyApp]]:
    """proxy(target_url, failures=0, status=503, headers=None, rewrite=None) → (server, ProxyApp)."""

    def start(target: str, **kwargs: Any) -> tuple[ThreadedServer, ProxyApp]:
        proxy_app = ProxyApp(target, **kwargs)
        return serve_app(proxy_app.app), proxy_app

    return start


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
