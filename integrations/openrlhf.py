"""OpenRLHF: this file is a reward function for `--reward.remote_url /path/to/integrations/openrlhf.py`.

OpenRLHF loads the file and calls `reward_func(queries, prompts, labels)` for each sample, `queries` being
prompt + response decoded *with* special tokens. OpenRLHF puts the returned reward on the response's last
token: it receives a sequence-level reward (the sum or mean of TLCR's token rewards), not dense ones.
Print the path with `python -c "import tlcr.integrations.openrlhf as m; print(m.__file__)"`.

Configured by environment variables (OpenRLHF passes no arguments), read at the first call:
  TLCR_REWARD_URL          service URL(s), comma-separated (required)
  TLCR_API_KEY             bearer token, when the service has one
  TLCR_POLICY_TOKENIZER    the policy's tokenizer (path or Hub id): its special tokens (EOS, <|im_end|>...)
                           are cut off the end of each query; without it they are scored as response text
  TLCR_REWARD_MODE         continuous (default), fixed, positive_only, negative_only, probability
  TLCR_REWARD_REDUCTION    sum (default) or mean
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

from tlcr.core.reward_modes import RewardMode
from tlcr.core.tokens import SUMMARY_KEYS, special_token_strings, strip_special_suffix, token_reward_summary
from tlcr.service.client import TokenRewardClient
from tlcr.service.schemas import TokenRewardItem

_lock = threading.Lock()


@functools.cache
def _setup() -> tuple[TokenRewardClient, tuple[str, ...], RewardMode, str]:
    url = os.environ.get("TLCR_REWARD_URL")
    if not url:
        raise RuntimeError("set TLCR_REWARD_URL to the TLCR service URL (OpenRLHF passes no arguments to reward_func)")
    reduction = os.environ.get("TLCR_REWARD_REDUCTION", "sum")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"TLCR_REWARD_REDUCTION must be 'sum' or 'mean', got {reduction!r}")
    mode = RewardMode(os.environ.get("TLCR_REWARD_MODE", RewardMode.continuous.value))
    specials: tuple[str, ...] = ()
    if os.environ.get("TLCR_POLICY_TOKENIZER"):
        from tlcr.core.models import load_tokenizer

        specials = special_token_strings(load_tokenizer(os.environ["TLCR_POLICY_TOKENIZER"]))
    return TokenRewardClient(url, api_key=os.environ.get("TLCR_API_KEY") or None), specials, mode, reduction


def split_response(index: int, query: str, prompt: str, specials: Sequence[str]) -> str:
    if not query.startswith(prompt):
        raise ValueError(f"query {index} does not start with its prompt; cannot tell the response apart")
    return strip_special_suffix(query[len(prompt):], specials)


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's reward function: {"rewards", "scores" (mean token probability, in [0, 1]), "extra_logs"}."""
    if len(queries) != len(prompts):
        raise ValueError(f"{len(queries)} queries for {len(prompts)} prompts")
    with _lock:
        client, specials, mode, reduction = _setup()
    responses = [split_response(i, q, p, specials) for i, (q, p) in enumerate(zip(queries, prompts, strict=True))]
    sent = [i for i, response in enumerate(responses) if response]
    results = client.token_rewards([TokenRewardItem(prompt=prompts[i], response=responses[i]) for i in sent],
                                   mode=mode, return_probabilities=True) if sent else []
    summaries = [token_reward_summary([], [])] * len(queries)  # an empty response: reward 0
    for i, result in zip(sent, results, strict=True):
        summaries[i] = token_reward_summary(result.rewards, result.probabilities or [])
    key = "tlcr/reward_sum" if reduction == "sum" else "tlcr/reward_mean"
    return {
        "rewards": torch.tensor([s[key] for s in summaries]),
        "scores": torch.tensor([s["tlcr/score"] for s in summaries]),
        "extra_logs": {k: torch.tensor([s[k] for s in summaries]) for k in SUMMARY_KEYS},
    }
