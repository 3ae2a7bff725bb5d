"""ASGI guards in front of the routes: the Host allowlist and a last-resort 500 that keeps connections.

Both answer with the one error body of the service, {"detail": "..."}, sent by `send_error`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("tlcr.service")


async def send_error(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}, ensure_ascii=True).encode("ascii")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def host_name(value: str) -> str:
    """'Example.com:8000' → 'example.com'; '[::1]:8000' → '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class AllowedHostsMiddleware:
    """400 for a Host header outside the allowlist: a web page on another site that rebinds its DNS name
    to 127.0.0.1 sends its own name as Host, so it cannot reach a key-less local service."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed is None else frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if host_name(host) not in self.allowed:
            await send_error(send, 400, f"Host {host!r} is not allowed (allowed: {', '.join(sorted(self.allowed))}); "
                                        "start the service with --allowed-hosts to accept other names")
            return
        await self.app(scope, receive, send)


class InternalErrorMiddleware:
    """A bug answers 500 naming only the exception type (the traceback goes to the log); the exception is
    not re-raised, so uvicorn keeps the connection open for the client's next request."""

    def __init__(self, app: ASGIApp, on_error: Callable[[], None]) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            self.on_error()
            if started:
                raise  # half a response is out: only closing the connection can tell the client
            logger.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            await send_error(send, 500, f"internal error ({type(exc).__name__}); the server log has the details")
