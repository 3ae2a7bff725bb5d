"""TRL: the async reward function and the dense-advantage GRPO trainer, with TRL's own GRPOTrainer,
a tiny policy generating on CPU, and a live TLCR service on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.models import load_causal_lm, load_tokenizer
from tlcr.integrations.trl import TLCRGRPOTrainer, TLCRRewardFunction, hh_transcript, rewards_to_go
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem

PROMPT = "\n\nHuman: Where does Bob live?\n\nAssistant:"
RESPONSES = [" Bob lives in Paris.", " I do not know", ""]


def test_hh_transcript_formats_chat_messages() -> None:
    prompt, response = hh_transcript([{"role": "user", "content": "Where does Bob live?"}],
                                     [{"role": "assistant", "content": "Bob lives in Paris."}])
    assert (prompt, response) == (PROMPT, " Bob lives in Paris.")
    assert hh_transcript("p", " r") == ("p", " r")
    with pytest.raises(ValueError, match="role 'tool'"):
        hh_transcript([{"role": "tool", "content": "x"}], [{"role": "assistant", "content": "y"}])
    with pytest.raises(TypeError, match="both"):
        hh_transcript("p", [{"role": "assistant", "content": "y"}])


def test_reward_function_reduces_the_services_token_rewards(tiny_reward_service: ServiceProcess) -> None:
    with TokenRewardClient(tiny_reward_service.url) as client:
        token = client.token_rewards([TokenRewardItem(prompt=PROMPT, response=r) for r in RESPONSES[:2]])
        sequence = client.sequence_rewards([SequenceRewardItem(prompt=PROMPT, response=r) for r in RESPONSES[:2]])
    prompts = [PROMPT] * len(RESPONSES)

    def call(**kwargs: object) -> list[float | None]:
        reward = TLCRRewardFunction(tiny_reward_service.url, **kwargs)
        return asyncio.run(reward(prompts=prompts, completions=RESPONSES))

    assert call() == pytest.approx([sum(t.rewards) for t in token] + [None])
    assert call(reduction="mean") == pytest.approx([sum(t.rewards) / len(t.rewards) for t in token] + [None])
    assert call(reduction="sequence") == pytest.approx([*sequence, None])
    chat = asyncio.run(TLCRRewardFunction(tiny_reward_service.url)(
        prompts=[[{"role": "user", "content": "Where does Bob live?"}]],
        completions=[[{"role": "assistant", "content": "Bob lives in Paris."}]]))
    assert chat == pytest.approx([sum(token[0].rewards)])
    with pytest.raises(ValueError, match="reduction"):
        TLCRRewardFunction(tiny_reward_service.url, reduction="max")  # type: ignore[arg-type]


def _prompts(n: int) -> Dataset:
    task = ControlledTask(seed=0)
    return Dataset.from_list([{"prompt": task.prompt(e, r)} for e, r in task.questions()[:n]])


def _config(tmp_path: Path, **overrides: object) -> GRPOConfig:
    settings: dict[str, object] = dict(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=4,
        num_generations=2, max_completion_length=6, max_steps=2, learning_rate=1e-2, logging_steps=1, beta=0.0,
        save_strategy="no", seed=0, dataloader_num_workers=0)
    settings.update(overrides)
    return GRPOConfig(**settings)  # type: ignore[arg-type]


def test_grpo_trainer_trains_with_the_async_reward_function(tiny_reward_service: ServiceProcess, tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    model = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    before = [p.detach().clone() for p in model.parameters()]
    trainer = GRPOTrainer(model=model, reward_funcs=[TLCRRewardFunction(tiny_reward_service.url)],
                          args=_config(tmp_path), train_dataset=_prompts(8),
                          processing_class=load_tokenizer(tiny_model_dir, "left"))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "rewards/tlcr/mean" in entry]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(e["rewards/tlcr/mean"])) for e in logged)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_rewards_to_go_sums_the_future_within_the_mask() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    assert torch.equal(rewards_to_go(rewards, mask, 1.0), torch.tensor([[6.0, 5.0, 3.0, 0.0], [1.0, 0.5, 0.0, 0.0]]))
    assert torch.allclose(rewards_to_go(rewards, mask, 0.5), torch.tensor([[2.75, 3.5, 3.0, 0.0], [0.75, 0.5, 0, 0]]))


@pytest.mark.parametrize("token_input", ["ids", "text"])
def test_dense_grpo_advantages_are_grpo_plus_whitened_token_returns(
        tiny_reward_service: ServiceProcess, tiny_model_dir: Path, tmp_path: Path, token_input: str) -> None:
    model = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    before = [p.detach().clone() for p in model.parameters()]
    trainer = TLCRGRPOTrainer(model=model, reward_funcs=[TLCRRewardFunction(tiny_reward_service.url)],
                              args=_config(tmp_path), train_dataset=_prompts(8),
                              processing_class=load_tokenizer(tiny_model_dir, "left"), tlcr_url=tiny_reward_service.url,
                              tlcr_coef=0.5, tlcr_token_input=token_input)
    batch = [{"prompt": p} for p in _prompts(4)["prompt"]]
    out = trainer._generate_and_score_completions(batch)
    advantages, mask = out["advantages"], out["completion_mask"].bool()
    assert advantages.shape == out["completion_ids"].shape and not advantages[~mask].any()

    # The dense part: the service's own rewards for the sampled tokens (ids: the same vocabulary).
    rewards = trainer.tlcr_token_rewards(out["prompt_ids"], out["prompt_mask"], out["completion_ids"],
                                         out["completion_mask"])
    if token_input == "ids":
        rows = [i for i in range(len(batch)) if mask[i].any()]
        with TokenRewardClient(tiny_reward_service.url) as client:
            expected = client.token_rewards([TokenRewardItem(
                prompt_token_ids=out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist(),
                response_token_ids=out["completion_ids"][i][mask[i]].tolist()) for i in rows])
        for i, result in zip(rows, expected, strict=True):
            assert rewards[i, :int(mask[i].sum())].tolist() == pytest.approx(result.rewards, abs=1e-6)
    assert mask.sum() > len(batch) and rewards[mask].abs().min() > 0  # real samples, every token rewarded
    returns = rewards_to_go(rewards, mask, 1.0)
    whitened = (returns - returns[mask].mean()) / returns[mask].std() * mask
    sequence_part = advantages - 0.5 * whitened
    for i in range(len(batch)):  # what is left is GRPO's one advantage per completion
        if mask[i].any():
            assert torch.allclose(sequence_part[i][mask[i]], sequence_part[i][mask[i]][0].expand(int(mask[i].sum())),
                                  atol=1e-5)

    trainer.train()
    assert any("tlcr/token_reward_mean" in entry for entry in trainer.state.log_history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
