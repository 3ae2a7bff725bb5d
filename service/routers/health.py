"""Public routes: liveness, readiness, Prometheus metrics and what is being served."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response, status
from transformers import PreTrainedTokenizerBase

from service.dependencies import ReadyState, State
from service.schemas import InfoResponse, RewardMode
from service.settings import public_name
from tlcr.models import demo_note
from tlcr.tokenization import tokenizer_fingerprint

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
    if not state.ready:
        reason = state.load_error or ("shutting down" if state.shutting_down else "loading the model")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not ready: {reason}",
                            headers={"Retry-After": str(state.settings.retry_after_s)})
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


@router.get("/info", response_model=InfoResponse)
async def info(state: ReadyState) -> InfoResponse:
    """The served model, its revision and tokenizer, limits and reward modes (names, never file paths)."""
    scorer = state.token_scorer
    assert scorer is not None
    return InfoResponse(
        model=scorer.name, revision=scorer.revision, tokenizer=public_name(str(scorer.tokenizer.name_or_path)),
        max_length=scorer.max_length, modes=list(RewardMode), device=str(scorer.device),
        dtype=str(scorer.dtype).removeprefix("torch."),
        sequence_model=(public_name(state.sequence_scorer.name) if state.sequence_scorer is not None else None),
        demo=demo_note(scorer.model.config),
        tokenizer_fingerprint=await asyncio.to_thread(_fingerprint, scorer.tokenizer),
    )


_FINGERPRINTS: dict[int, str] = {}  # by id() of the loaded tokenizer: computed once (a vocabulary sort)


def _fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    key = id(tokenizer)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = tokenizer_fingerprint(tokenizer)
    return _FINGERPRINTS[key]
