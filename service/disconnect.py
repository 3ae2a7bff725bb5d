"""Routes whose client disconnects are cancelled, so the request's sequences still queued are never computed.

uvicorn does not cancel a request's task when its client goes away: it marks the request disconnected,
and `receive()`, which waits once the body has been read, then returns {"type": "http.disconnect"}.
So a route whose body has already been read waits on `receive()` alongside its work and cancels the
work when the disconnect arrives (vLLM's `with_cancellation`; Starlette's StreamingResponse listens the
same way). Cancelling the work cancels its wait in the batcher, which takes the request's queued
sequences out of the queue (service/batcher.py).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from fastapi import Request, Response
from starlette.types import Receive

from tlcr.service.state import ServiceState

Params = ParamSpec("Params")
Result = TypeVar("Result")

# nginx's status for "client closed request": nobody receives it (uvicorn discards what is sent to a
# closed connection), but the request metrics record it under this status.
CLIENT_CLOSED_REQUEST = 499


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; the work was cancelled."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client has disconnected. Only once the body has been read: it consumes messages."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[Result]) -> Result:
    """`await work` in this task; if the client disconnects first, the work is cancelled (its clean-up, such
    as leaving the batcher's queue, runs before this returns) and `ClientDisconnected` is raised."""
    # The work runs in this task and one watcher task cancels it on a disconnect: one task per request
    # fewer than running the work in a task of its own and waiting for either (asyncio.wait).
    task = asyncio.current_task()
    assert task is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        await wait_for_disconnect(receive)
        disconnected = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise  # cancelled from outside (shutdown): not a disconnect
        if sys.version_info >= (3, 11):
            task.uncancel()
        raise ClientDisconnected from None
    finally:
        watcher.cancel()


def count_dropped(state: ServiceState, route_path: str) -> Response:
    """Counts a request dropped by its client in `tlcr_dropped_requests`; the response nobody will read."""
    state.metrics.dropped_requests.labels(route_path).inc()
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def cancel_on_disconnect(route: Callable[Params, Awaitable[Result]]) -> Callable[Params, Awaitable[Result | Response]]:
    """Decorate a FastAPI route that takes `raw_request: Request` and a body that FastAPI parses before
    calling it: the route's work is cancelled when its client disconnects, and the request is counted in
    `tlcr_dropped_requests`."""
    if "raw_request" not in inspect.signature(route).parameters:
        raise TypeError(f"{route.__name__} needs a 'raw_request: Request' parameter to watch for its client")

    @functools.wraps(route)
    async def cancellable(*args: Params.args, **kwargs: Params.kwargs) -> Result | Response:
        request = kwargs["raw_request"]
        assert isinstance(request, Request)
        try:
            return await unless_disconnected(request.receive, route(*args, **kwargs))
        except ClientDisconnected:
            return count_dropped(request.app.state.service, request.scope["route"].path)

    return cancellable
