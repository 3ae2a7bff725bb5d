"""Inference routes: POST /token_rewards, /sequence_rewards and OpenRLHF's /get_reward."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, status
from transformers import PreTrainedTokenizerBase

from service.batcher import DynamicBatcher
from service.dependencies import ReadyState, body_parsed
from service.items import ItemError, PreparedItem, prepare_sequence_item, prepare_token_item, split_query
from service.json_route import PausedGCJSONRoute
from service.rewards import reduce_rewards, rewards_from_probabilities
from service.schemas import (
    ErrorResponse,
    GetRewardRequest,
    GetRewardResponse,
    RewardMode,
    SequenceRewardsRequest,
    SequenceRewardsResponse,
    TokenRewardItem,
    TokenRewardResult,
    TokenRewardsRequest,
    TokenRewardsResponse,
)
from service.scorer import Encoded
from service.state import ServiceState
from tlcr.models import ModelLoadError, load_tokenizer
from tlcr.tokens import special_token_strings, strip_special_suffix, token_reward_summary

Result = TypeVar("Result")
Work = TypeVar("Work")

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


def _check_item_count(state: ServiceState, count: int, field: str = "items") -> None:
    limit = state.settings.max_items_per_request
    if count > limit:
        raise ItemError(field, f"{count} items exceed the limit of {limit} per request "
                               "(split the batch; the client does this itself)")


async def _score(state: ServiceState, batcher: DynamicBatcher[Encoded, Result],
                 encoded: Sequence[Encoded]) -> list[Result]:
    try:
        return await asyncio.wait_for(batcher.submit(encoded), timeout=state.settings.request_timeout_s)
    except asyncio.TimeoutError as exc:  # (TimeoutError itself only from Python 3.11)
        state.metrics.errors.labels("timeout").inc()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no result within {state.settings.request_timeout_s:g} s; the service is overloaded",
                            headers={"Retry-After": str(state.settings.retry_after_s)}) from exc


async def off_loop(state: ServiceState, work: Callable[[], Work]) -> Work:
    """`work()` (tokenizing, aligning, decoding) in a worker thread, at most --max-preparing at once, so
    the event loop keeps answering and a burst of big requests waits instead of piling up."""
    async with state.preparing:
        return await asyncio.to_thread(work)


async def _prepare_all(items: Sequence[TokenRewardItem], tokenizer: PreTrainedTokenizerBase,
                       state: ServiceState, return_tokens: bool = False) -> list[PreparedItem]:
    assert state.token_scorer is not None
    limits = state.limits(state.token_scorer)
    return await off_loop(state, lambda: [prepare_token_item(i, item, tokenizer, limits, return_tokens)
                                          for i, item in enumerate(items)])


def _prefix_token_strings(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], window: int | None) -> list[str]:
    """Each token's new text, decoding from at most `window` tokens back (None: from the start)."""
    pieces: list[str] = []
    start = done = 0  # ids[start:done] were decoded into text already handed out
    for end in range(1, len(ids) + 1):
        before = tokenizer.decode(list(ids[start:done])) if done > start else ""
        text = tokenizer.decode(list(ids[start:end]))
        if text.endswith("\ufffd") and end < len(ids):
            pieces.append("")  # incomplete character: wait for the token that finishes it
            continue
        pieces.append(text[len(before):] if text.startswith(before) else text)
        if window is not None:
            start, done = max(0, end - window), end
        else:
            done = end
    return pieces


def token_strings(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded response; they concatenate to the whole response.

    Decoding tokens one by one garbles characters split over several byte-level tokens ("" or "�");
    instead each token gets the new text of the decoded prefix, and a token that ends mid-character
    gets "" while the token that completes the character carries it. Prefixes are decoded from a few
    tokens back (linear time); if that ever disagrees with decoding the whole response, every prefix is
    decoded from the start (quadratic, bounded by max_length).
    """
    pieces = _prefix_token_strings(tokenizer, ids, window=4)
    if "".join(pieces) == tokenizer.decode(list(ids)):
        return pieces
    return _prefix_token_strings(tokenizer, ids, window=None)


def build_result(prepared: PreparedItem, probabilities: np.ndarray, mode: RewardMode, threshold: float,
                 return_probabilities: bool, return_tokens: bool,
                 tokenizer: PreTrainedTokenizerBase) -> TokenRewardResult:
    """Rewards of the response tokens (the caller's tokens when offsets were given)."""
    rewards = rewards_from_probabilities(probabilities, mode, threshold)
    probs: np.ndarray = probabilities
    tokens: list[str] | None = None
    if prepared.alignment is not None:
        rewards = prepared.alignment.sum(rewards)
        probs = prepared.alignment.mean(probabilities)
        tokens = prepared.caller_tokens
    elif return_tokens:
        tokens = token_strings(tokenizer, prepared.encoded.response_ids)
    return TokenRewardResult(
        rewards=rewards.tolist(),
        probabilities=np.asarray(probs, dtype=np.float64).tolist() if return_probabilities else None,
        tokens=tokens if return_tokens else None,
    )


@router.post("/token_rewards", response_model=TokenRewardsResponse, tags=["rewards"])
async def token_rewards(request: TokenRewardsRequest, state: ReadyState) -> TokenRewardsResponse:
    """Per-token rewards of each item's response tokens: r = 2·D − 1 by default (TLCR)."""
    scorer, batcher = state.token_scorer, state.token_batcher
    assert scorer is not None and batcher is not None
    _check_item_count(state, len(request.items))
    prepared = await _prepare_all(request.items, scorer.tokenizer, state, request.return_tokens)
    probabilities = await _score(state, batcher, [p.encoded for p in prepared])
    state.metrics.items.labels("/token_rewards").inc(len(prepared))
    results = await off_loop(state, lambda: [
        build_result(p, probs, request.mode, request.threshold, request.return_probabilities,
                     request.return_tokens, scorer.tokenizer)
        for p, probs in zip(prepared, probabilities, strict=True)])
    return TokenRewardsResponse(model=scorer.name, revision=scorer.revision, mode=request.mode, results=results)


@router.post("/sequence_rewards", response_model=SequenceRewardsResponse, tags=["rewards"],
             responses={404: {"model": ErrorResponse, "description": "No sequence reward model is loaded"}})
async def sequence_rewards(request: SequenceRewardsRequest, state: ReadyState) -> SequenceRewardsResponse:
    """One scalar per (prompt, response) from the sequence reward model (the PPO_seq baseline)."""
    scorer, batcher = state.sequence_scorer, state.sequence_batcher
    if scorer is None or batcher is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no sequence reward model is loaded: start the service with --sequence-model")
    _check_item_count(state, len(request.items))
    limits = state.limits(scorer)
    encoded = await off_loop(state, lambda: [prepare_sequence_item(i, item, scorer.tokenizer, limits)
                                             for i, item in enumerate(request.items)])
    scores = await _score(state, batcher, encoded)
    state.metrics.items.labels("/sequence_rewards").inc(len(encoded))
    return SequenceRewardsResponse(model=scorer.name, revision=scorer.revision, rewards=scores)


@functools.cache
def _policy_specials(name: str) -> tuple[str, ...]:
    return special_token_strings(load_tokenizer(name))


@router.post("/get_reward", response_model=GetRewardResponse, tags=["openrlhf"])
async def get_reward(request: GetRewardRequest, state: ReadyState) -> GetRewardResponse:
    """OpenRLHF remote reward model: full texts in `query`, one scalar each (sum or mean of token rewards),
    plus `scores` (mean token probability) and `extra_logs` (token-reward statistics)."""
    scorer, batcher = state.token_scorer, state.token_batcher
    assert scorer is not None and batcher is not None
    settings = state.settings
    _check_item_count(state, len(request.query), "query")
    if request.prompts is not None and len(request.prompts) != len(request.query):
        raise ItemError("prompts", f"{len(request.prompts)} prompts for {len(request.query)} queries")
    specials: tuple[str, ...] = ()
    if settings.get_reward_policy_tokenizer:
        try:
            specials = await asyncio.to_thread(_policy_specials, settings.get_reward_policy_tokenizer)
        except ModelLoadError as exc:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                                f"get_reward_policy_tokenizer: {exc}") from exc
    prompts: Sequence[str | None] = request.prompts or [None] * len(request.query)
    items = []
    for i, (query, prompt) in enumerate(zip(request.query, prompts, strict=True)):
        prompt_text, response = split_query(i, strip_special_suffix(query, specials), prompt)
        items.append(TokenRewardItem(prompt=prompt_text, response=response))
    prepared = await _prepare_all(items, scorer.tokenizer, state)
    probabilities = await _score(state, batcher, [p.encoded for p in prepared])
    state.metrics.items.labels("/get_reward").inc(len(prepared))
    rewards = [rewards_from_probabilities(p, settings.default_mode, settings.default_threshold)
               for p in probabilities]
    summaries = [token_reward_summary(r.tolist(), p.tolist()) for r, p in zip(rewards, probabilities, strict=True)]
    return GetRewardResponse(rewards=[reduce_rewards(r, settings.get_reward_reduction) for r in rewards],
                             scores=[s["tlcr/score"] for s in summaries],
                             extra_logs={key: [s[key] for s in summaries] for key in summaries[0]})
