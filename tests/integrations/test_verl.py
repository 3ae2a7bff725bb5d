"""verl: TLCRAgentLoop (verl's own SingleTurnAgentLoop underneath, generation stubbed) against a live TLCR
service, and verl's own KL penalty, GAE and REINFORCE++ on its dense `rm_scores` equal to tlcr's maths.
Runs in .venv-verl (.ci/engines.sh verl); skipped where verl is not installed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integrations.conftest import engine
from tlcr.core.models import load_tokenizer
from tlcr.core.tokenization import decode_with_offsets
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess
from tlcr.service.schemas import TokenRewardItem
from tlcr.trainer.ppo_math import gae_advantages, kl_per_token, masked_whiten, shape_rewards

AGENT_LOOP_YAML = Path(__file__).resolve().parents[2] / "configs" / "integrations" / "verl_agent_loop.yaml"
CHAT_TEMPLATE = ("{% for m in messages %}\n\n{{ 'Human' if m['role'] == 'user' else 'Assistant' }}: "
                 "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}\n\nAssistant:{% endif %}")
QUESTIONS = ["Where does Bob live?", "What is Alice's job?", "Who is Carol's friend?"]
ANSWERS = [" Bob lives in Paris.", " She is a baker and she likes it", " Dave"]


class StubServer:
    """Stands in for verl's LLM server manager only: `generate` returns a fixed sample (plus EOS)."""

    def __init__(self, tokenizer: Any, text: str) -> None:
        self.token_ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict, **kwargs: Any) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        return TokenOutput(token_ids=self.token_ids)


def run_loop(policy_dir: Path, url: str, answer: str, question: str, token_input: str) -> tuple[Any, Any]:
    """(TLCRAgentLoop's output, the policy tokenizer), built inside the running event loop as verl does."""
    engine("verl")
    import hydra
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap

    # configs/integrations/verl_agent_loop.yaml, instantiated the way verl's AgentLoopWorker does.
    [loop_config] = OmegaConf.load(AGENT_LOOP_YAML)
    assert loop_config.name == "tlcr_agent"
    loop_config.reward_url, loop_config.token_input = url, token_input
    tokenizer = load_tokenizer(policy_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 64, "response_length": 48}}})

    async def main() -> Any:
        loop = hydra.utils.instantiate(config=loop_config, trainer_config=DictConfigWrap(config),
                                       server_manager=StubServer(tokenizer, answer), tokenizer=tokenizer,
                                       processor=None, hf_model_type=None, dataset_cls=None,
                                       data_config=DictConfigWrap(OmegaConf.create({})), tools=ToolListWrap([]))
        return await loop.run({}, raw_prompt=[{"role": "user", "content": question}])

    return asyncio.run(main()), tokenizer


def test_agent_loop_emits_the_services_token_rewards_as_rm_scores(tiny_reward_service: ServiceProcess,
                                                                  tiny_model_dir: Path) -> None:
    output, _ = run_loop(tiny_model_dir, tiny_reward_service.url, ANSWERS[0], QUESTIONS[0], "ids")
    fields = output.as_dict()
    with TokenRewardClient(tiny_reward_service.url) as client:
        [expected] = client.token_rewards([TokenRewardItem(prompt_token_ids=output.prompt_ids,
                                                           response_token_ids=output.response_ids)])
    assert fields["rm_scores"].shape == fields["responses"].shape == fields["response_mask"].shape
    assert fields["rm_scores"].tolist() == pytest.approx(expected.rewards, abs=1e-6)
    assert output.reward_score == pytest.approx(sum(expected.rewards), abs=1e-5)  # verl calls no RM of its own
    assert "token_rewards" not in fields
    info = output.extra_fields["reward_extra_info"]
    assert info["tlcr_response_tokens"] == len(output.response_ids)


def test_agent_loop_with_another_policy_tokenizer(tiny_reward_service: ServiceProcess, tiny_gpt2_dir: Path) -> None:
    output, tokenizer = run_loop(tiny_gpt2_dir, tiny_reward_service.url, ANSWERS[0], QUESTIONS[0], "text")
    text, spans = decode_with_offsets(tokenizer, output.response_ids, output.prompt_ids)
    prompt = tokenizer.decode(output.prompt_ids, skip_special_tokens=True)
    with TokenRewardClient(tiny_reward_service.url) as client:
        [expected] = client.token_rewards([TokenRewardItem(prompt=prompt, response=text, response_offsets=spans)])
    rm_scores = output.as_dict()["rm_scores"]
    assert len(rm_scores) == len(output.response_ids)  # one per policy token, EOS included (its span is empty)
    assert rm_scores.tolist() == pytest.approx(expected.rewards, abs=1e-6)


def test_verl_kl_penalty_gae_and_reinforce_pp_on_dense_rm_scores_equal_tlcr_maths(tiny_reward_service: ServiceProcess,
                                                                         tiny_model_dir: Path) -> None:
    engine("verl")
    from verl import DataProto
    from verl.trainer.ppo.core_algos import (
        FixedKLController,
        compute_gae_advantage_return,
        compute_reinforce_plus_plus_outcome_advantage,
    )
    from verl.trainer.ppo.ray_trainer import apply_kl_penalty

    outputs = [run_loop(tiny_model_dir, tiny_reward_service.url, a, q, "ids")[0] for q, a in zip(QUESTIONS, ANSWERS,
                                                                                           strict=True)]
    fields = [o.as_dict() for o in outputs]
    width = max(len(f["responses"]) for f in fields)
    scores, mask = torch.zeros(len(fields), width), torch.zeros(len(fields), width, dtype=torch.long)
    for i, f in enumerate(fields):  # verl pads responses on the right
        scores[i, :len(f["rm_scores"])] = f["rm_scores"]
        mask[i, :len(f["rm_scores"])] = f["response_mask"]
    assert mask[0].sum() > mask[2].sum()  # ragged: padding is exercised
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(scores.shape, generator=generator) * mask
    ref_logprobs = -torch.rand(scores.shape, generator=generator) * mask
    values = torch.randn(scores.shape, generator=generator) * mask
    beta, gamma, lam = 0.05, 0.99, 0.95

    data = DataProto.from_dict({"token_level_scores": scores, "response_mask": mask, "old_log_probs": logprobs,
                                "ref_log_prob": ref_logprobs})
    data, _ = apply_kl_penalty(data, FixedKLController(beta), kl_penalty="kl")
    verl_rewards = data.batch["token_level_rewards"]
    ours = shape_rewards(kl_per_token(logprobs, ref_logprobs, mask.bool(), "k1"), mask.bool(), beta, scores)
    assert torch.allclose(verl_rewards * mask, ours, atol=1e-6)  # KL subtracted once, dense rewards kept

    verl_advantages, verl_returns = compute_gae_advantage_return(verl_rewards, values, mask, gamma, lam)
    our_advantages, our_returns = gae_advantages(ours, values, mask.bool(), gamma, lam)
    assert torch.allclose(verl_returns * mask, our_returns, atol=1e-5)
    assert torch.allclose(verl_advantages * mask, masked_whiten(our_advantages, mask.bool()), atol=1e-5)

    # REINFORCE++: whitened γ-discounted reward-to-go, as TLCRGRPOTrainer's dense term (integrations.trl).
    from types import SimpleNamespace

    from tlcr.integrations.common import rewards_to_go

    rpp_advantages, rpp_returns = compute_reinforce_plus_plus_outcome_advantage(
        verl_rewards, mask, config=SimpleNamespace(gamma=gamma))
    assert torch.allclose(rpp_returns, rewards_to_go(ours, mask.bool(), gamma), atol=1e-5)
    assert torch.allclose(rpp_advantages, masked_whiten(rewards_to_go(ours, mask.bool(), gamma), mask.bool()),
                          atol=1e-5)
