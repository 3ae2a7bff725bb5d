"""verl: an agent loop that emits TLCR's dense per-token rewards as `rm_scores` (docs/integrations.md#verl).

`TLCRAgentLoop` is verl's `SingleTurnAgentLoop` plus one call to the TLCR service with the policy's response
tokens. Its output's `as_dict()` (what verl's V1 trainer stores per trajectory) carries `rm_scores` = one
TLCR reward per response token, which verl uses as `token_level_scores`; with `algorithm.use_kl_in_reward`
verl subtracts β·KL per token once (the service's rewards hold no KL term), then runs GAE or REINFORCE++.
`reward_score` is set to the sum of token rewards, so verl calls no reward model of its own; verl's older
batch path (`AgentLoopWorker._postprocess`) builds `rm_scores` from `reward_score` alone: there the
reward is the sum, on the last response token (sequence-level).

Select it in verl's config (configs/integrations/verl_agent_loop.yaml):
  actor_rollout_ref.rollout.agent.agent_loop_config_path=configs/integrations/verl_agent_loop.yaml
  actor_rollout_ref.rollout.agent.default_agent_loop=tlcr_agent
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from tlcr.core.reward_modes import RewardMode
from tlcr.core.tokens import token_reward_summary
from tlcr.integrations.common import check_token_input, token_reward_items
from tlcr.service.client import AsyncTokenRewardClient

# One client (one connection pool) per event loop and service: agent loops are built per trajectory.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str | None], AsyncTokenRewardClient]]
_clients = weakref.WeakKeyDictionary()


def _client(url: str, api_key: str | None) -> AsyncTokenRewardClient:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    if (url, api_key) not in per_loop:
        per_loop[(url, api_key)] = AsyncTokenRewardClient(url, api_key=api_key)
    return per_loop[(url, api_key)]


class DenseRewardAgentLoopOutput(AgentLoopOutput):
    """An AgentLoopOutput whose `rm_scores` are per token: `token_rewards`, one per response token."""

    token_rewards: list[float]

    def as_dict(self) -> dict[str, Any]:
        output = super().as_dict()
        output.pop("token_rewards", None)
        output["rm_scores"] = torch.tensor(self.token_rewards, dtype=torch.float32)
        return output


@register("tlcr_agent")
class TLCRAgentLoop(SingleTurnAgentLoop):
    """Single-turn rollout scored token by token by a TLCR service.

    Config keys (beside `name` and `_target_` in the agent-loop YAML): `reward_url` (required; several
    comma-separated URLs are balanced), `api_key`, `token_input` ("ids" when the policy and discriminator share
    a tokenizer, else "text"), `mode` (continuous, fixed, ...), `threshold` (tau of the fixed mode).
    """

    def __init__(self, *args: Any, reward_url: str, api_key: str | None = None, token_input: str = "ids",
                 mode: str = RewardMode.continuous.value, threshold: float = 0.6, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reward_url = reward_url
        self.api_key = api_key
        self.token_input = check_token_input(token_input)
        self.mode = RewardMode(mode)
        self.threshold = threshold

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        output = await super().run(sampling_params, **kwargs)
        positions = [t for t, m in enumerate(output.response_mask) if m]  # the policy's own tokens
        generated = [output.response_ids[t] for t in positions]
        _, items = token_reward_items(self.tokenizer, [output.prompt_ids], [generated], self.token_input)
        token_rewards = [0.0] * len(output.response_ids)
        summary = token_reward_summary([], [])
        if items:
            [result] = await _client(self.reward_url, self.api_key).token_rewards(
                items, mode=self.mode, threshold=self.threshold, return_probabilities=True)
            for position, reward in zip(positions, result.rewards, strict=False):  # beyond max_length: 0
                token_rewards[position] = reward
            summary = token_reward_summary(result.rewards, result.probabilities or [])
        output.extra_fields["reward_extra_info"] = {key.replace("/", "_"): value for key, value in summary.items()}
        fields = output.model_dump(exclude_unset=True)
        fields["reward_score"] = float(sum(token_rewards))
        return DenseRewardAgentLoopOutput(**fields, token_rewards=token_rewards)
