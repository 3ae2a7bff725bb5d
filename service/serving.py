"""The serving layer under the HTTP routes: from a parsed request to its response, one function per route.

The routes in service/routers/ only declare the HTTP contract, call one of these and return what it
gives. Here requests are checked against the limits, prepared in worker threads (tokenizing, aligning),
scored through the dynamic batcher and turned into response models. Errors are raised as the exceptions
the app's handlers answer (`ItemError` → 422, `QueueFull` → 503, `HTTPException`).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from fastapi import HTTPException, status
from transformers import PreTrainedTokenizerBase

from tlcr.core.models import ModelLoadError, demo_note, load_tokenizer
from tlcr.core.tokenization import tokenizer_fingerprint
from tlcr.core.tokens import special_token_strings, strip_special_suffix, token_reward_summary
from tlcr.service.batcher import DynamicBatcher
from tlcr.service.items import ItemError, PreparedItem, prepare_sequence_item, prepare_token_item, split_query
from tlcr.service.rewards import reduce_rewards, rewards_from_probabilities
from tlcr.service.schemas import (
    GetRewardRequest,
    GetRewardResponse,
    InfoResponse,
    RewardMode,
    SequenceRewardsRequest,
    SequenceRewardsResponse,
    TokenRewardItem,
    TokenRewardResult,
    TokenRewardsRequest,
    TokenRewardsResponse,
)
from tlcr.service.scorer import Encoded
from tlcr.service.settings import public_name
from tlcr.service.state import ServiceState
from tlcr.service.token_strings import token_strings

Result = TypeVar("Result")
Work = TypeVar("Work")


def check_ready(state: ServiceState) -> None:
    """503 + Retry-After, naming why, unless the model is loaded and warmed up."""
    if not state.ready:
        reason = state.load_error or ("shutting down" if state.shutting_down else "loading the model")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not ready: {reason}",
                            headers={"Retry-After": str(state.settings.retry_after_s)})


_FINGERPRINTS: dict[int, str] = {}  # by id() of the loaded tokenizer: computed once (a vocabulary sort)


def _fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    key = id(tokenizer)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = tokenizer_fingerprint(tokenizer)
    return _FINGERPRINTS[key]


async def info(state: ServiceState) -> InfoResponse:
    """What is served: names, revision, limits and modes (never file paths)."""
    scorer = state.token_scorer
    assert scorer is not None
    return InfoResponse(
        model=scorer.name, revision=scorer.revision, tokenizer=public_name(str(scorer.tokenizer.name_or_path)),
        max_length=scorer.max_length, modes=list(RewardMode), device=str(scorer.device),
        dtype=str(scorer.dtype).removeprefix("torch."),
        sequence_model=(public_name(state.sequence_scorer.name) if state.sequence_scorer is not None else None),
        demo=demo_note(scorer.config),
        tokenizer_fingerprint=await asyncio.to_thread(_fingerprint, scorer.tokenizer),
    )


def _check_item_count(state: ServiceState, count: int, field: str = "items") -> None:
    limit = state.settings.max_items_per_request
    if count > limit:
        raise ItemError(field, f"{count} items exceed the limit of {limit} per request "
                               "(split the batch; the client does this itself)")


async def _score(state: ServiceState, batcher: DynamicBatcher[Encoded, Result],
                 encoded: Sequence[Encoded]) -> list[Result]:
    try:
        if sys.version_info >= (3, 11):  # a deadline on this task; wait_for runs the work in a task of its own
            async with asyncio.timeout(state.settings.request_timeout_s):
                return await batcher.submit(encoded)
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


# Work this small runs on the event loop: a hop to a worker thread and back costs more than it (checking
# and copying a few thousand token ids, or turning as many probabilities into rewards, takes tens of µs).
INLINE_TOKENS = 4096


def _ids_only(items: Sequence[TokenRewardItem]) -> bool:
    """Whether every item comes as token ids (nothing to tokenize) and they are few."""
    total = 0
    for item in items:
        if item.prompt_token_ids is None or item.response_token_ids is None:
            return False
        total += len(item.prompt_token_ids) + len(item.response_token_ids)
    return total <= INLINE_TOKENS


async def _prepare_all(items: Sequence[TokenRewardItem], tokenizer: PreTrainedTokenizerBase,
                       state: ServiceState, return_tokens: bool = False) -> list[PreparedItem]:
    assert state.token_scorer is not None
    limits = state.limits(state.token_scorer)

    def prepare() -> list[PreparedItem]:
        return [prepare_token_item(i, item, tokenizer, limits, return_tokens) for i, item in enumerate(items)]

    return prepare() if _ids_only(items) else await off_loop(state, prepare)


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


async def token_rewards(state: ServiceState, request: TokenRewardsRequest) -> TokenRewardsResponse:
    """Per-token rewards of each item's response tokens."""
    scorer, batcher = state.token_scorer, state.token_batcher
    assert scorer is not None and batcher is not None
    _check_item_count(state, len(request.items))
    prepared = await _prepare_all(request.items, scorer.tokenizer, state, request.return_tokens)
    probabilities = await _score(state, batcher, [p.encoded for p in prepared])
    state.metrics.items.labels("/token_rewards").inc(len(prepared))
    def build() -> list[TokenRewardResult]:
        return [build_result(p, probs, request.mode, request.threshold, request.return_probabilities,
                             request.return_tokens, scorer.tokenizer)
                for p, probs in zip(prepared, probabilities, strict=True)]

    small = not request.return_tokens and sum(len(p) for p in probabilities) <= INLINE_TOKENS and all(
        p.alignment is None for p in prepared)
    results = build() if small else await off_loop(state, build)
    return TokenRewardsResponse(model=scorer.name, revision=scorer.revision, mode=request.mode, results=results)


async def sequence_rewards(state: ServiceState, request: SequenceRewardsRequest) -> SequenceRewardsResponse:
    """One scalar per item from the sequence reward model; 404 when none is loaded."""
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


_OWN_SPECIALS: dict[int, tuple[str, ...]] = {}  # by id() of the loaded tokenizer, as _FINGERPRINTS


def _own_specials(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    key = id(tokenizer)
    if key not in _OWN_SPECIALS:
        _OWN_SPECIALS[key] = special_token_strings(tokenizer)
    return _OWN_SPECIALS[key]


async def get_reward(state: ServiceState, request: GetRewardRequest) -> GetRewardResponse:
    """OpenRLHF's remote reward: each full text split into prompt and response, one scalar per text."""
    scorer, batcher = state.token_scorer, state.token_batcher
    assert scorer is not None and batcher is not None
    settings = state.settings
    _check_item_count(state, len(request.query), "query")
    if request.prompts is not None and len(request.prompts) != len(request.query):
        raise ItemError("prompts", f"{len(request.prompts)} prompts for {len(request.query)} queries")
    # A query's trailing special tokens (EOS, template end markers) end the sample; they are not response text.
    # The discriminator's own always (a TLCR discriminator starts from the policy's SFT model, so they are
    # usually the policy's too), the policy's when its tokenizer is named.
    specials = _own_specials(scorer.tokenizer)
    if settings.get_reward_policy_tokenizer:
        try:
            policy = await asyncio.to_thread(_policy_specials, settings.get_reward_policy_tokenizer)
        except ModelLoadError as exc:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                                f"get_reward_policy_tokenizer: {exc}") from exc
        specials = tuple(sorted({*specials, *policy}, key=len, reverse=True))
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
