"""The FastAPI application factory of the reward service.

`create_app(settings)` returns an app whose lifespan loads the models in a worker thread after the
server is up (so /healthz answers during a long 7B load and /readyz says when scoring can start) and,
on shutdown, finishes queued work after uvicorn has drained the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.batcher import BatcherClosed, QueueFull
from service.body_limit import BodySizeLimitMiddleware
from service.items import ItemError
from service.metrics import RequestMetricsMiddleware
from service.routers import health, rewards, ui
from service.schemas import API_VERSION
from service.settings import ServiceSettings
from service.state import ServiceState

logger = logging.getLogger("tlcr.service")

MAX_REPORTED_ERRORS = 10


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


def _install_error_handlers(app: FastAPI, state: ServiceState) -> None:
    retry_after = {"Retry-After": str(state.settings.retry_after_s)}

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        state.metrics.errors.labels("validation").inc()
        detail = format_validation_errors(exc.errors())
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            # FastAPI only parses JSON declared as such (a guard against cross-site form posts).
            detail = (f"the body must be JSON sent with 'Content-Type: application/json' "
                      f"(got {content_type or 'no content type'!r}); {detail}")
        return JSONResponse({"detail": detail},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ItemError)
    async def item_error(request: Request, exc: ItemError) -> JSONResponse:
        state.metrics.errors.labels("validation").inc()
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(QueueFull)
    async def overloaded(request: Request, exc: QueueFull) -> JSONResponse:
        state.metrics.errors.labels("overload").inc()
        return JSONResponse({"detail": f"overloaded: {exc}; retry after {state.settings.retry_after_s} s"},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=retry_after)

    @app.exception_handler(BatcherClosed)
    async def closing(request: Request, exc: BatcherClosed) -> JSONResponse:
        return JSONResponse({"detail": f"shutting down: {exc}"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers=retry_after)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        state.metrics.errors.labels("internal").inc()  # uvicorn logs the traceback
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def create_app(settings: ServiceSettings, on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The reward service app. `on_fatal` is called if the models fail to load (the CLI exits then)."""
    state = ServiceState(settings)

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
    app.include_router(rewards.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    _install_error_handlers(app, state)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)  # outermost: sees every request
    return app
