"""The FastAPI application factory of the reward service.

`create_app(settings)` returns an app whose lifespan loads the models in a worker thread after the
server is up (so /healthz answers during a long 7B load and /readyz says when scoring can start) and,
on shutdown, finishes queued work after uvicorn has drained the requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tlcr.service.batcher import BatcherClosed, QueueFull
from tlcr.service.body_limit import BodySizeLimitMiddleware
from tlcr.service.dependencies import require_api_key
from tlcr.service.direct_routes import DirectRoutes
from tlcr.service.guards import AllowedHostsMiddleware, BigBodySlotMiddleware, InternalErrorMiddleware
from tlcr.service.items import ItemError
from tlcr.service.metrics import RequestMetricsMiddleware
from tlcr.service.routers import health, rewards, ui
from tlcr.service.schemas import API_VERSION
from tlcr.service.settings import ServiceSettings
from tlcr.service.state import ServiceState

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 10
BIG_BODY_BYTES = 1 << 20  # bodies over 1 MiB are parsed one at a time (and can hold over 500k values)


def format_location(loc: tuple[Any, ...]) -> str:
    """('body', 'items', 0, 'prompt') → 'items[0].prompt'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def format_validation_errors(errors: Any) -> str:
    """FastAPI's validation errors as one readable line naming each bad field."""
    parts = []
    for error in list(errors)[:MAX_REPORTED_ERRORS]:
        if error.get("type") == "json_invalid":
            position = error["loc"][-1]
            parts.append(f"body is not valid JSON (at character {position}: {error.get('ctx', {}).get('error')})")
            continue
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{format_location(tuple(error.get('loc', ())))}: {message}")
    if len(errors) > MAX_REPORTED_ERRORS:
        parts.append(f"... and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)


class ErrorResponse(JSONResponse):
    """Every error body is {"detail": "..."}; ASCII-escaped, so echoing any input can never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def explain_body_error(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a body it took for JSON (its own message names no reason)."""
    if isinstance(cause, UnicodeDecodeError):
        return (f"the body is not valid {cause.encoding.upper()} text (byte 0x{cause.object[cause.start]:02x} at "
                f"position {cause.start}); send uncompressed JSON encoded as UTF-8")
    if isinstance(cause, RecursionError):
        return "the body's JSON nests arrays or objects too deeply to parse"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"the body holds a number too long to parse: {str(cause).split(';')[0]}"
    return f"the body cannot be parsed as JSON ({type(cause).__name__ if cause else 'unknown error'})"


def _install_error_handlers(app: FastAPI, state: ServiceState) -> None:
    retry_after = {"Retry-After": str(state.settings.retry_after_s)}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == status.HTTP_400_BAD_REQUEST and detail == "There was an error parsing the body":
            state.metrics.errors.labels("validation").inc()
            detail = explain_body_error(exc.__cause__)
        return ErrorResponse({"detail": str(detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        state.metrics.errors.labels("validation").inc()
        detail = format_validation_errors(exc.errors())
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            # FastAPI only parses JSON declared as such (a guard against cross-site form posts).
            detail = (f"the body must be JSON sent with 'Content-Type: application/json' "
                      f"(got {content_type or 'no content type'!r}); {detail}")
        return ErrorResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ItemError)
    async def item_error(request: Request, exc: ItemError) -> JSONResponse:
        state.metrics.errors.labels("validation").inc()
        return ErrorResponse({"detail": str(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(QueueFull)
    async def overloaded(request: Request, exc: QueueFull) -> JSONResponse:
        state.metrics.errors.labels("overload").inc()
        return ErrorResponse({"detail": f"overloaded: {exc}; retry after {state.settings.retry_after_s} s"},
                             status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=retry_after)

    @app.exception_handler(BatcherClosed)
    async def closing(request: Request, exc: BatcherClosed) -> JSONResponse:
        return ErrorResponse({"detail": f"shutting down: {exc}"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                             headers=retry_after)


def create_app(settings: ServiceSettings, on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The reward service app. `on_fatal` is called if the models fail to load or the forward process dies (the
    CLI exits then)."""
    state = ServiceState(settings)
    state.on_fatal = on_fatal

    async def load() -> None:
        try:
            await state.load()
            logger.info("ready: serving %s", settings.served_model_name)
        except Exception as exc:
            state.load_error = f"failed to load: {type(exc).__name__}: {exc}"
            logger.error("%s", state.load_error)
            if on_fatal is not None:
                on_fatal(exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(load(), name="tlcr-load-models")
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
            await state.close()

    app = FastAPI(
        title="TLCR reward service",
        version=API_VERSION,
        description="Token-level continuous rewards (TLCR): r_t = 2·D(token) − 1 from a token discriminator.",
        lifespan=lifespan,
    )
    app.state.service = state
    if settings.api_key is not None:  # only then does the schema declare bearer auth and 401s
        app.include_router(rewards.router, dependencies=[Depends(require_api_key)],
                           responses=rewards.AUTH_ERRORS)  # type: ignore[arg-type]
    else:
        app.include_router(rewards.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    _install_error_handlers(app, state)
    # Added innermost first: well-formed inference requests answered ahead of FastAPI → errors → one big body
    # parsed at a time → body size and encoding → Host check → metrics (sees every request).
    app.add_middleware(DirectRoutes, routes=rewards.DIRECT_ROUTES, state=state,
                       exception_handlers=app.exception_handlers, max_body_bytes=BIG_BODY_BYTES)
    app.add_middleware(InternalErrorMiddleware, on_error=lambda: state.metrics.errors.labels("internal").inc())
    app.add_middleware(BigBodySlotMiddleware, threshold=BIG_BODY_BYTES, max_values=settings.max_json_values)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AllowedHostsMiddleware, allowed=settings.host_allowlist)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    return app
