"""`tlcr.pipeline`: the KL of a policy to its reference on held-out prompts, the oracle's scores of a policy's sampled
responses, and the demo's config layering."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.models import load_causal_lm, load_tokenizer
from tlcr.demo import DemoConfig
from tlcr.pipeline import PER_RESPONSE, PipelineConfig, evaluate_policy, held_out_prompts, policy_kl


def test_kl_of_a_policy_to_itself_is_zero(tiny_model_dir: Path, controlled_task: ControlledTask) -> None:
    prompts = [p.prompt for p in controlled_task.pairs(6, seed=1)]
    assert policy_kl(tiny_model_dir, tiny_model_dir, prompts, max_new_tokens=8) == pytest.approx(0.0, abs=1e-6)


def test_kl_to_a_perturbed_reference_is_positive_and_reproducible(
        tiny_model_dir: Path, controlled_task: ControlledTask, tmp_path: Path) -> None:
    model = load_causal_lm(tiny_model_dir)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "perturbed")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "perturbed")
    prompts = [p.prompt for p in controlled_task.pairs(6, seed=1)]
    first = policy_kl(tmp_path / "perturbed", tiny_model_dir, prompts, max_new_tokens=8, seed=5)
    again = policy_kl(tmp_path / "perturbed", tiny_model_dir, prompts, max_new_tokens=8, seed=5)
    assert first > 0.0 and math.isfinite(first)
    assert first == pytest.approx(again)


def test_kl_without_prompts_is_nan(tiny_model_dir: Path) -> None:
    assert math.isnan(policy_kl(tiny_model_dir, tiny_model_dir, [], max_new_tokens=4))


def test_evaluate_policy_scores_every_sampled_response_with_the_oracle(
        tiny_model_dir: Path, controlled_task: ControlledTask, tmp_path: Path) -> None:
    prompts = held_out_prompts("validation", 2, limit=3)
    config = PipelineConfig(max_new_tokens=8, seed=1)
    result = evaluate_policy(tiny_model_dir, tiny_model_dir, prompts, config)
    assert [row["prompt"] for row in result["rows"]] == prompts
    for row in result["rows"]:
        assert row["oracle_score"] == controlled_task.oracle(row["prompt"], row["response"]).score
        assert 0 <= row["tokens"] <= 8
    assert set(result["summary"]) == {*PER_RESPONSE.values(), "kl_to_sft"}
    assert result["summary"]["kl_to_sft"] == 0.0  # the reference itself
    assert evaluate_policy(tiny_model_dir, tiny_model_dir, prompts, config) == result  # seeded sampling
    assert math.isnan(evaluate_policy(tiny_model_dir, tmp_path, prompts, config, with_kl=False)["summary"]["kl_to_sft"])


def test_demo_config_is_a_pipeline_config_with_the_smoke_overrides() -> None:
    smoke = DemoConfig.smoke(seed=3)
    assert isinstance(smoke, PipelineConfig)
    assert smoke.seed == 3 and smoke.ppo_steps == 2 and smoke.pairs == 200
    assert asdict(DemoConfig())["sft_epochs"] == PipelineConfig().sft_epochs


def test_no_evaluation_prompt_occurs_in_any_training_part(tmp_path: Path) -> None:
    """The demo's and the comparison's SFT / reward-model / PPO files hold no validation or test question."""
    from tlcr.core.data.jsonl import iter_jsonl
    from tlcr.pipeline import prepare_data

    config = DemoConfig.smoke(pairs=600, vocab_size=300, hidden_size=16)
    data, _ = prepare_data(config, tmp_path)
    trained = {obj["prompt"] for part in ("sft", "rm", "ppo") for _, obj in iter_jsonl(data.files[part])}
    assert len(trained) > 100
    validation = held_out_prompts("validation", 1)
    test = held_out_prompts("test", 3)
    assert len(set(test)) == 48 and len(test) == 3 * 48 and len(set(validation)) == 48
    assert not trained & set(validation) and not trained & set(test) and not set(validation) & set(test)
    assert held_out_prompts("test", 2, limit=5) == [p for p in held_out_prompts("test", 1)[:5] for _ in range(2)]
