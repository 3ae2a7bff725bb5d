"""Reject request bodies over a size limit with 413 and a message naming the limit, and compressed
bodies with 415.

Checks Content-Length up front and counts streamed (chunked) bytes, so an oversized body is refused
before it is buffered or parsed. A Content-Encoding other than identity is refused rather than inflated
(a few KB of gzip can expand to gigabytes).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tlcr.service.guards import TrackedSend, send_error


class BodyTooLarge(HTTPException):
    """Raised from receive() mid-stream; an HTTPException so FastAPI passes it through as a 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _detail(self, size: str) -> str:
        return (f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes "
                "(split the batch, or raise --max-body-bytes)")

    async def _reject(self, send: Send, detail: str) -> None:
        # No 'Connection: close': uvicorn then discards the unread rest of the body instead of closing the
        # socket with unread data, which makes the kernel reset the connection before the client reads the 413.
        await send_error(send, 413, detail)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                await send_error(send, 415, f"Content-Encoding {value.decode('latin-1')!r} is not accepted; "
                                            "send the JSON body uncompressed")
                return
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await self._reject(send, self._detail(value.decode()))
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self._detail(f"more than {self.max_body_bytes}"))
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except BodyTooLarge as exc:
            if tracked.started:
                raise
            await self._reject(send, exc.detail)
