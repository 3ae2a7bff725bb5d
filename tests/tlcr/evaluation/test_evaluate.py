"""`evaluate_policies` against a real reward service on loopback, with tiny models."""

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import TokenRewardClient
from service.launcher import ServiceProcess, start_service
from tlcr.data.controlled import ControlledTask
from tlcr.evaluation.evaluate import EvalConfig, evaluate_policies, heatmap_samples, score_with_service


@pytest.fixture(scope="module")
def service(tiny_token_classifier_dir: Path, sequence_rm_dir: Path) -> Iterator[ServiceProcess]:
    with start_service(tiny_token_classifier_dir, sequence_model=sequence_rm_dir,
                       extra_args=["--torch-threads", "1"]) as proc:
        yield proc


def test_scores_match_token_rewards_and_empty_responses_score_zero(service: ServiceProcess) -> None:
    with TokenRewardClient(service.url) as client:
        rows = score_with_service(client, ["\n\nHuman: hi\n\nAssistant:"] * 2, [" hello there.", ""], True)
        direct = client.token_rewards([{"prompt": "\n\nHuman: hi\n\nAssistant:", "response": " hello there."}])
        fixed = client.token_rewards([{"prompt": "\n\nHuman: hi\n\nAssistant:", "response": " hello there."}],
                                     mode="fixed")
    assert rows[0]["continuous_token_reward_sum"] == pytest.approx(sum(direct[0].rewards))
    assert rows[0]["fixed_token_reward_sum"] == pytest.approx(sum(fixed[0].rewards))
    assert "".join(rows[0]["tokens"]) == " hello there."
    assert math.isfinite(rows[0]["sequence_reward"])
    assert rows[1]["continuous_token_reward_sum"] == 0.0 and rows[1]["tokens"] == []


def test_evaluate_policies_with_oracle(service: ServiceProcess, tiny_model_dir: Path,
                                       controlled_task: ControlledTask) -> None:
    prompts = [p.prompt for p in controlled_task.pairs(4, seed=9)]
    config = EvalConfig(max_new_tokens=8, batch_size=3)
    with TokenRewardClient(service.url) as client:
        results = evaluate_policies({"a": tiny_model_dir, "b": tiny_model_dir}, prompts, client, config,
                                    task=controlled_task)
    a, b = results
    assert a.responses == b.responses  # greedy generation is deterministic
    for key in ("sequence_reward", "fixed_token_reward_sum", "continuous_token_reward_sum", "oracle_score",
                "response_tokens"):
        assert math.isfinite(a.metrics[key]), key
    assert a.metrics == b.metrics
    samples = heatmap_samples(results, 2)
    assert {s.policy for s in samples} <= {"a", "b"}
    assert all(len(s.tokens) == len(s.rewards) for s in samples)
