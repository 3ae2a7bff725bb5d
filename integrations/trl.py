"""TLCR in TRL (docs/integrations.md#trl).

- `TLCRRewardFunction`: an async callable for any trainer's `reward_funcs` (GRPO, RLOO...): one float per
  completion, the sum or mean of TLCR token rewards, or the sequence reward model's score.
- `TLCRGRPOTrainer`: `trl.GRPOTrainer` whose advantages become per-token: GRPO's group-normalised sequence
  advantage plus `tlcr_coef` times the whitened reward-to-go of the service's token rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from trl import GRPOTrainer

from tlcr.core.data.pairs import ASSISTANT_MARKER
from tlcr.core.reward_modes import RewardMode
from tlcr.integrations.common import check_token_input, dense_rewards, rewards_to_go, token_reward_items
from tlcr.service.client import AsyncTokenRewardClient, TokenRewardClient
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem

Reduction = Literal["sum", "mean", "sequence"]
Messages = list[dict[str, Any]]

_ROLES = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}


def hh_transcript(prompt: str | Messages, completion: str | Messages) -> tuple[str, str]:
    """(prompt, response) texts in the HH-RLHF transcript format TLCR discriminators are trained on.

    Plain strings pass through unchanged. Chat messages become "\\n\\nHuman: ...\\n\\nAssistant:" turns,
    and the completion's assistant text follows after one space.
    """
    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt, completion
    if isinstance(prompt, str) or isinstance(completion, str):
        raise TypeError("prompt and completion must both be text or both be chat messages")
    turns = []
    for i, message in enumerate(prompt):
        role = _ROLES.get(str(message.get("role", "")).lower())
        if role is None:
            raise ValueError(f"prompt message {i} has role {message.get('role')!r}; expected user, assistant or system")
        turns.append(f"\n\n{role}: {message.get('content', '')}")
    response = "".join(str(m.get("content", "")) for m in completion)
    return "".join(turns) + ASSISTANT_MARKER, " " + response.lstrip()


class TLCRRewardFunction:
    """`reward_funcs=[TLCRRewardFunction(url)]`: one reward per completion from a TLCR service (async).

    reduction: "sum" (default, the return of the dense rewards), "mean" (length-neutral) or "sequence"
    (the service's sequence reward model, `--sequence-model`). A completion with no text gets None,
    which TRL treats as unscorable. `to_text(prompt, completion)` turns TRL's prompt/completion (text or
    chat messages) into the discriminator's (prompt, response) texts; default `hh_transcript`.
    Holds no connection between calls, so it pickles and works from any event loop.
    """

    def __init__(self, url: str | Sequence[str], *, reduction: Reduction = "sum",
                 mode: RewardMode | str = RewardMode.continuous, threshold: float = 0.6, api_key: str | None = None,
                 to_text: Callable[[Any, Any], tuple[str, str]] = hh_transcript, name: str = "tlcr",
                 timeout: float = 60.0, max_retries: int = 8) -> None:
        if reduction not in ("sum", "mean", "sequence"):
            raise ValueError(f"reduction must be 'sum', 'mean' or 'sequence', got {reduction!r}")
        self.url = url
        self.reduction = reduction
        self.mode = RewardMode(mode)
        self.threshold = threshold
        self.api_key = api_key
        self.to_text = to_text
        self.__name__ = name  # TRL's name for the reward in logs ("rewards/tlcr/mean")
        self.timeout = timeout
        self.max_retries = max_retries

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        pairs = [self.to_text(p, c) for p, c in zip(prompts, completions, strict=True)]
        sent = [i for i, (_, response) in enumerate(pairs) if response.strip()]
        rewards: list[float | None] = [None] * len(pairs)
        if not sent:
            return rewards
        async with AsyncTokenRewardClient(self.url, api_key=self.api_key, timeout=self.timeout,
                                          max_retries=self.max_retries) as client:
            if self.reduction == "sequence":
                scores = await client.sequence_rewards(
                    [SequenceRewardItem(prompt=pairs[i][0], response=pairs[i][1]) for i in sent])
            else:
                results = await client.token_rewards(
                    [TokenRewardItem(prompt=pairs[i][0], response=pairs[i][1]) for i in sent],
                    mode=self.mode, threshold=self.threshold)
                scores = [sum(r.rewards) if self.reduction == "sum" else sum(r.rewards) / len(r.rewards)
                          for r in results]
        for i, score in zip(sent, scores, strict=True):
            rewards[i] = float(score)
        return rewards


class TLCRGRPOTrainer(GRPOTrainer):
    """GRPO with TLCR's dense per-token signal in its advantages, shape (B, T).

    A_t = A_GRPO + tlcr_coef · whiten(G_t), G_t the (γ-discounted) sum of the TLCR token rewards from token t
    to the end of the completion, whitened over all completion tokens of the generation batch (all processes).
    GRPO's KL term (beta) stays in its loss; the token rewards carry no KL, so nothing is counted twice.
    `reward_funcs` still give the sequence-level part (pass `TLCRRewardFunction` to use the service for both).

    tlcr_token_input: "ids" when the policy and the discriminator share a tokenizer, else "text" (decoded
    text with each policy token's character span; the service re-aligns rewards to the policy's tokens).
    """

    def __init__(self, *args: Any, tlcr_url: str | Sequence[str], tlcr_coef: float = 1.0, tlcr_gamma: float = 1.0,
                 tlcr_token_input: str = "ids", tlcr_mode: RewardMode | str = RewardMode.continuous,
                 tlcr_threshold: float = 0.6, tlcr_api_key: str | None = None, **kwargs: Any) -> None:
        if not 0.0 <= tlcr_gamma <= 1.0:
            raise ValueError(f"tlcr_gamma must be in [0, 1], got {tlcr_gamma}")
        self.tlcr_coef = tlcr_coef
        self.tlcr_gamma = tlcr_gamma
        self.tlcr_token_input = check_token_input(tlcr_token_input)
        self.tlcr_mode = RewardMode(tlcr_mode)
        self.tlcr_threshold = tlcr_threshold
        self.tlcr_client = TokenRewardClient(tlcr_url, api_key=tlcr_api_key)
        super().__init__(*args, **kwargs)

    def tlcr_token_rewards(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                           completion_mask: torch.Tensor) -> torch.Tensor:
        """The service's reward of every completion token, [B, T] like `completion_ids`, 0 outside the mask."""
        mask = completion_mask.bool().cpu()
        prompts = [row[m].tolist() for row, m in zip(prompt_ids.cpu(), prompt_mask.bool().cpu(), strict=True)]
        completions = [row[m].tolist() for row, m in zip(completion_ids.cpu(), mask, strict=True)]
        sent, items = token_reward_items(self._tokenizer, prompts, completions, self.tlcr_token_input)
        results = self.tlcr_client.token_rewards(items, mode=self.tlcr_mode, threshold=self.tlcr_threshold) if items \
            else []
        # Rewards are indexed over the masked-in tokens; completion masks are a prefix here (right padding).
        return dense_rewards(results, sent, completion_ids.shape[0], completion_ids.shape[1]) * mask

    def _whiten_across_processes(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        maskf = mask.to(values.dtype)
        stats = torch.stack([(values * maskf).sum(), (values.pow(2) * maskf).sum(), maskf.sum()])
        total, total_sq, count = self.accelerator.gather(stats.to(self.accelerator.device)).view(-1, 3).sum(0).cpu()
        if count < 2:
            return torch.zeros_like(values)
        mean = total / count
        variance = (total_sq - count * mean.pow(2)) / (count - 1)  # unbiased, as trainer.ppo_math.masked_whiten
        return (values - mean) * torch.rsqrt(variance.clamp(min=0.0) + 1e-8) * maskf

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mask = output["completion_mask"].bool()
        if "tool_mask" in output:
            mask = mask & output["tool_mask"].bool()
        rewards = self.tlcr_token_rewards(output["prompt_ids"], output["prompt_mask"], output["completion_ids"],
                                          output["completion_mask"])
        token_advantages = self._whiten_across_processes(rewards_to_go(rewards, mask.cpu(), self.tlcr_gamma),
                                                         mask.cpu())
        sequence_advantages = output["advantages"]
        if sequence_advantages.dim() == 1:
            sequence_advantages = sequence_advantages.unsqueeze(1)
        device = sequence_advantages.device
        output["advantages"] = (sequence_advantages + self.tlcr_coef * token_advantages.to(device)) * mask.to(device)
        mode = "train" if self.model.training else "eval"
        maskf = mask.cpu().float()
        self._metrics[mode]["tlcr/token_reward_mean"].append(
            float((rewards * maskf).sum() / maskf.sum().clamp(min=1)))
        self._metrics[mode]["tlcr/response_reward_sum_mean"].append(float(rewards.sum(1).mean()))
        return output
