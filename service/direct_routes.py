"""The inference routes answered straight from ASGI when a request is well-formed; FastAPI answers the rest.

FastAPI's request handling (routing, solving dependencies, validating the parsed JSON in Python mode,
validating the returned model again, its exception middleware) took a quarter to a third of the event loop's
CPU per request. Event-loop CPU per 1-item POST /token_rewards, the same server with and without these direct
routes, alternated (2 runs each, 2 cores, hidden-256 model, before the 1 MiB bound below was added): 0.26
against 0.41-0.42 ms at 16 clients, 0.81-0.86 against 1.07-1.12 ms at 1 client. While the loop answers one
full batch's requests and parses the next, the model waits, so that time is lost throughput.

`DirectRoutes` takes a POST to one of its paths only when FastAPI would accept it as is: a JSON body of known
length up to `max_body_bytes`, the service ready, the API key (if any) right, and the body valid for the
route's request model (parsed and validated in one pass by pydantic's JSON parser). Anything else goes on to
the FastAPI route unchanged (a body already read is handed over again), so every refusal keeps the one answer
it has always had; the size bound keeps an invalid body from being parsed twice at a cost that matters, and
keeps bodies that take the big-body parsing slot out of here. The work itself is the serving layer's,
cancelled if the client disconnects, and its errors are answered by the app's own exception handlers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tlcr.service.dependencies import api_key_matches
from tlcr.service.disconnect import ClientDisconnected, count_dropped, unless_disconnected
from tlcr.service.guards import read_body, replay_body
from tlcr.service.json_route import gc_paused
from tlcr.service.state import ServiceState

ExceptionHandler = Callable[[Request, Exception], Response | Awaitable[Response]]


@dataclass(frozen=True)
class DirectRoute:
    """A POST route's path (also its metrics label), request model and serving function."""

    path: str
    request_model: type[BaseModel]
    handle: Callable[[ServiceState, Any], Awaitable[BaseModel]]


def is_json(content_type: bytes) -> bool:
    """'application/json', with any parameters: the content type every JSON client sends."""
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def bearer_token(authorization: bytes) -> str | None:
    """'Bearer KEY' → 'KEY' (the scheme's case ignored, as FastAPI's HTTPBearer does)."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class DirectRoutes:
    """ASGI middleware in front of FastAPI's router: answers well-formed requests to `routes` itself."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, DirectRoute], state: ServiceState,
                 exception_handlers: Mapping[Any, ExceptionHandler], max_body_bytes: int) -> None:
        self.app = app
        self.routes = routes
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.exception_handlers = exception_handlers  # the app's own (a live view: handlers added later count)

    def _route(self, scope: Scope) -> DirectRoute | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        route = self.routes.get(scope["path"])
        if route is None or not self.state.ready:
            return None  # FastAPI answers: 404/405, or 503 naming why the service is not ready
        content_type = authorization = length = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get() reads them
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-length" and length is None:
                length = value
        if content_type is None or not is_json(content_type):
            return None
        if length is None or not length.isdigit() or int(length) > self.max_body_bytes:
            return None  # chunked or big: parsed once, by FastAPI (its cost dwarfs the shortcut's gain)
        expected = self.state.settings.api_key
        if expected is not None:
            token = bearer_token(authorization) if authorization is not None else None
            if token is None or not api_key_matches(expected, token):
                return None  # FastAPI answers 401 and counts it
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            await count_dropped(self.state, route.path)(scope, receive, send)
            return
        try:
            with gc_paused():
                request = route.request_model.model_validate_json(body)
        except ValidationError:
            # FastAPI parses it again and answers with its errors, worded as for every other refusal.
            await self.app(scope, replay_body(body, receive), send)
            return
        del body
        scope["route"] = route  # the request metrics' label, as FastAPI's routing sets it
        try:
            result = await unless_disconnected(receive, route.handle(self.state, request))
        except ClientDisconnected:
            await count_dropped(self.state, route.path)(scope, receive, send)
            return
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # a bug: the internal-error middleware answers 500
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        content = result.model_dump_json(by_alias=True).encode()  # FastAPI's serialization, byte for byte
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(content)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": content})

    def _handler(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:  # the most specific registered class, as Starlette looks it up
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None

