"""Public routes: liveness, readiness, Prometheus metrics and what is being served."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tlcr.service import serving
from tlcr.service.dependencies import ReadyState, State
from tlcr.service.schemas import InfoResponse

router = APIRouter(tags=["operations"])
_NOT_READY: dict[int | str, dict[str, str]] = {503: {"description": "Loading, failed to load, or shutting down"}}


@router.head("/healthz", include_in_schema=False)  # HEAD too (load balancers); registered after GET,
@router.get("/healthz")  # so a 405's Allow header names GET, as the schema does
async def healthz() -> dict[str, str]:
    """The process is up and serving HTTP (the model may still be loading)."""
    return {"status": "alive"}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", responses=_NOT_READY)
async def readyz(state: State) -> dict[str, str]:
    """200 once the model is loaded and a warm-up forward ran; 503 before and while shutting down."""
    serving.check_ready(state)
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


@router.get("/info", response_model=InfoResponse)
async def info(state: ReadyState) -> InfoResponse:
    """The served model, its revision and tokenizer, limits and reward modes (names, never file paths)."""
    return await serving.info(state)
