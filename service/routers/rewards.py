"""Inference routes: POST /token_rewards, /sequence_rewards and OpenRLHF's /get_reward.

Each declares its contract, hands the parsed request to the serving layer (service/serving.py) and is
cancelled if its client disconnects first (service/disconnect.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tlcr.service import serving
from tlcr.service.dependencies import ReadyState, body_parsed
from tlcr.service.direct_routes import DirectRoute
from tlcr.service.disconnect import cancel_on_disconnect
from tlcr.service.json_route import PausedGCJSONRoute
from tlcr.service.schemas import (
    ErrorResponse,
    GetRewardRequest,
    GetRewardResponse,
    SequenceRewardsRequest,
    SequenceRewardsResponse,
    TokenRewardsRequest,
    TokenRewardsResponse,
)

_ERRORS = {
    400: {"model": ErrorResponse,
          "description": "Body unreadable as JSON (bad UTF-8, too deep, huge number), or a bad Host"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    415: {"model": ErrorResponse, "description": "Compressed (Content-Encoding) bodies are not accepted"},
    422: {"model": ErrorResponse, "description": "Invalid request; the message names the item and field"},
    503: {"model": ErrorResponse, "description": "Overloaded, loading or shutting down; see Retry-After"},
}
AUTH_ERRORS = {401: {"model": ErrorResponse, "description": "Missing or wrong API key"}}

# The app adds the API key check when there is a key.
router = APIRouter(responses=_ERRORS, dependencies=[Depends(body_parsed)],  # type: ignore[arg-type]
                   route_class=PausedGCJSONRoute)


@router.post("/token_rewards", response_model=TokenRewardsResponse, tags=["rewards"])
@cancel_on_disconnect
async def token_rewards(request: TokenRewardsRequest, state: ReadyState, raw_request: Request) -> TokenRewardsResponse:
    """Per-token rewards of each item's response tokens: r = 2·D − 1 by default (TLCR)."""
    return await serving.token_rewards(state, request)


@router.post("/sequence_rewards", response_model=SequenceRewardsResponse, tags=["rewards"],
             responses={404: {"model": ErrorResponse, "description": "No sequence reward model is loaded"}})
@cancel_on_disconnect
async def sequence_rewards(request: SequenceRewardsRequest, state: ReadyState,
                           raw_request: Request) -> SequenceRewardsResponse:
    """One scalar per (prompt, response) from the sequence reward model (the PPO_seq baseline)."""
    return await serving.sequence_rewards(state, request)


@router.post("/get_reward", response_model=GetRewardResponse, tags=["openrlhf"])
@cancel_on_disconnect
async def get_reward(request: GetRewardRequest, state: ReadyState, raw_request: Request) -> GetRewardResponse:
    """OpenRLHF remote reward model: full texts in `query`, one scalar each (sum or mean of token rewards),
    plus `scores` (mean token probability) and `extra_logs` (token-reward statistics)."""
    return await serving.get_reward(state, request)


# The same three routes for service/direct_routes.py, which answers their well-formed requests ahead of FastAPI.
DIRECT_ROUTES = {route.path: route for route in (
    DirectRoute("/token_rewards", TokenRewardsRequest, serving.token_rewards),
    DirectRoute("/sequence_rewards", SequenceRewardsRequest, serving.sequence_rewards),
    DirectRoute("/get_reward", GetRewardRequest, serving.get_reward),
)}
