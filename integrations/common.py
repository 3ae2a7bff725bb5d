"""What every engine adapter does with the reward service: policy samples → service items → dense rewards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from tlcr.core.tokenization import decode_with_offsets
from tlcr.service.schemas import TokenRewardItem, TokenRewardResult

# "ids": the policy and the discriminator share a vocabulary, token ids are sent as they are.
# "text": decoded text plus each policy token's character span; the service re-aligns rewards to them.
TokenInput = Literal["ids", "text"]
TOKEN_INPUTS: tuple[str, ...] = ("ids", "text")


def check_token_input(token_input: str) -> TokenInput:
    if token_input not in TOKEN_INPUTS:
        raise ValueError(f"token_input must be 'ids' (policy and discriminator share a vocabulary) or 'text' "
                         f"(any policy tokenizer), got {token_input!r}")
    return token_input  # type: ignore[return-value]


def token_reward_items(tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[Sequence[int]],
                       response_ids: Sequence[Sequence[int]], token_input: TokenInput,
                       prompt_texts: Sequence[str] | None = None) -> tuple[list[int], list[TokenRewardItem]]:
    """(indices of the samples sent, their service items); a sample without response text is not sent.

    `response_ids` are the policy's action tokens only (no padding). With "text", the prompt is
    `prompt_texts[i]` when given, else the prompt ids decoded without special tokens.
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(response_ids)} responses")
    sent: list[int] = []
    items: list[TokenRewardItem] = []
    for i, (prompt, response) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if not response:
            continue
        if token_input == "ids":
            sent.append(i)
            items.append(TokenRewardItem(prompt_token_ids=list(prompt), response_token_ids=list(response)))
            continue
        text, spans = decode_with_offsets(tokenizer, response, prompt)
        if not text:
            continue
        prompt_text = prompt_texts[i] if prompt_texts is not None else tokenizer.decode(
            list(prompt), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        sent.append(i)
        items.append(TokenRewardItem(prompt=prompt_text, response=text, response_offsets=spans))
    return sent, items


def dense_rewards(results: Sequence[TokenRewardResult], sent: Sequence[int], batch: int, width: int) -> torch.Tensor:
    """[batch, width] float32 rewards, row `sent[k]` holding result k's rewards from index 0; zeros elsewhere.

    A response longer than the service's max_length gets rewards for the tokens that fit; the rest stay 0.
    """
    rewards = torch.zeros(batch, width)
    for row, result in zip(sent, results, strict=True):
        values = result.rewards[:width]
        rewards[row, :len(values)] = torch.tensor(values, dtype=torch.float32)
    return rewards


def rewards_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{s≥t} γ^(s−t)·r_s over each row's masked-in tokens; 0 outside the mask."""
    maskf = mask.to(rewards.dtype)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * maskf[:, t]
        returns[:, t] = running
    return returns
