"""ASGI guards in front of the routes: the Host allowlist, one big body parsed at a time, and a
last-resort 500 that keeps connections.

They answer with the one error body of the service, {"detail": "..."}, sent by `send_error`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


async def send_error(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}, ensure_ascii=True).encode("ascii")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnects first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app behind: `body` (already read) first, then whatever comes after it."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent, body
        if sent:
            return await receive()
        sent = True
        message: Message = {"type": "http.request", "body": body, "more_body": False}
        body = b""  # not held for the rest of the request
        return message

    return replayed


class TrackedSend:
    """`send`, noting whether the response has started (after that, an error can no longer be answered)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


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
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            self.on_error()
            if tracked.started:
                raise  # half a response is out: only closing the connection can tell the client
            logger.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            await send_error(send, 500, f"internal error ({type(exc).__name__}); the server log has the details")


PARSE_SLOT = "tlcr.release_parse_slot"


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_value_count(body: bytes) -> int:
    """About how many values a JSON body holds: commas outside strings, plus one (a bound for arrays)."""
    commas = body.count(b",")
    return commas + 1 if b'"' not in body else _JSON_STRING.sub(b"", body).count(b",") + 1


class BigBodySlotMiddleware:
    """Requests with a body over `threshold` bytes (or of unknown length) are parsed and validated one at a
    time. FastAPI parses JSON on the event loop into Python objects several times the body's size, so a few
    megabyte-sized bodies at once would multiply memory and stall the loop back to back. The body is read
    in full first (a slow sender holds no slot); one holding more than `max_values` JSON values is refused
    with 413 before it is parsed (parsing costs time and memory per value, not per byte). The slot is
    released when the route starts (`release_parse_slot`, after parsing) or when the response ends."""

    def __init__(self, app: ASGIApp, threshold: int, max_values: int, slots: int = 1) -> None:
        self.app = app
        self.threshold = threshold
        self.max_values = max_values
        self.slots = asyncio.Semaphore(slots)

    def _big(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return not value.isdigit() or int(value) > self.threshold
        return scope.get("method") in ("POST", "PUT", "PATCH")  # chunked: size unknown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._big(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        if body.count(b",") >= self.max_values and (values := json_value_count(body)) > self.max_values:
            await send_error(send, 413, f"request body holds about {values} JSON values, more than the limit of "
                                        f"{self.max_values} (split the batch, or raise --max-json-values)")
            return

        await self.slots.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.slots.release()

        scope[PARSE_SLOT] = release
        replayed = replay_body(body, receive)
        del body  # held by `replayed` only until the app has read it
        try:
            await self.app(scope, replayed, send)
        finally:
            release()
            # An error while parsing leaves the body in reference cycles (exception, traceback, frames) that
            # only a collection frees; without one, a burst of failing megabyte bodies piles up in memory.
            gc.collect()


def release_parse_slot(scope: Scope) -> None:
    """Called once the body is parsed: the next big body may be parsed now."""
    release = scope.get(PARSE_SLOT)
    if release is not None:
        release()
