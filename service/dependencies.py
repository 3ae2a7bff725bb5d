"""FastAPI dependencies: the service state, readiness, and the optional API key (Bearer).

All are `async def` although none awaits: FastAPI runs plain `def` dependencies in its thread pool, and
three thread hand-offs per request cost more than the checks themselves.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from tlcr.service.guards import release_parse_slot
from tlcr.service.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="The service's API key, when it was started with one.")


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def api_key_matches(expected: SecretStr, given: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    return secrets.compare_digest(given.encode(), expected.get_secret_value().encode())


async def require_api_key(state: State,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """401 unless the request carries the configured key; no-op when the service has no key."""
    expected = state.settings.api_key
    if expected is None:
        return
    if credentials is None:
        state.metrics.errors.labels("auth").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not api_key_matches(expected, credentials.credentials):
        state.metrics.errors.labels("auth").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})


async def body_parsed(request: Request) -> None:
    """FastAPI solves dependencies after parsing the body: release the big-body parsing slot."""
    release_parse_slot(request.scope)


async def require_ready(state: State) -> ServiceState:
    """The state, once models are loaded; 503 + Retry-After while loading or shutting down."""
    if not state.ready:
        reason = state.load_error or ("shutting down" if state.shutting_down else "the model is still loading")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not ready: {reason}",
                            headers={"Retry-After": str(state.settings.retry_after_s)})
    return state


ReadyState = Annotated[ServiceState, Depends(require_ready)]
