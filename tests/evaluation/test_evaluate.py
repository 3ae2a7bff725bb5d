"""`evaluate_policies` against a real reward service on loopback, with tiny models."""

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlcr.core.data.controlled import ControlledTask
from tlcr.evaluation.evaluate import EvalConfig, evaluate_policies, heatmap_samples, score_with_service
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess, start_service


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


def test_eval_command_writes_report(service: ServiceProcess, tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from tlcr.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--policy", f"sft={tiny_model_dir}", "--policy", f"ppo={tiny_model_dir}",
                                      "--reward-url", service.url, "--output-dir", str(out), "--data-limit", "3",
                                      "--max-new-tokens", "6", "--heatmaps", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["summary"]) == {"sft", "ppo"}
    assert all(math.isfinite(v) for row in metrics["summary"].values() for v in row.values())
    assert (out / "fig6.png").stat().st_size > 1000 and "class=\"tok\"" in (out / "report.html").read_text()
    assert len((out / "responses.jsonl").read_text().splitlines()) == 6


def test_eval_command_rejects_bad_options(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tlcr.cli import app

    result = CliRunner().invoke(app, ["eval", "--policy", f"a={tiny_model_dir}", "--policy", f"a={tiny_model_dir}",
                                      "--reward-url", "http://127.0.0.1:9", "--output-dir", str(tmp_path)])
    assert result.exit_code != 0 and "given twice" in result.output
    result = CliRunner().invoke(app, ["eval", "--policy", f"a={tiny_model_dir}", "--reward-url", "http://127.0.0.1:9",
                                      "--output-dir", str(tmp_path), "--mt-bench", "q.jsonl"])
    assert result.exit_code != 0 and "needs --judge-url" in result.output


def test_eval_command_exits_2_naming_a_policy_that_cannot_load(service: ServiceProcess, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tlcr.cli import app
    from tlcr.core.exit_codes import ExitCode

    result = CliRunner().invoke(app, ["eval", "--policy", f"a={tmp_path / 'missing'}", "--reward-url", service.url,
                                      "--output-dir", str(tmp_path / "report"), "--data-limit", "2"])
    assert result.exit_code == ExitCode.BAD_INPUT and "missing" in result.output


def test_eval_command_exits_3_when_the_service_is_unreachable(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tests.support.ports import unused_port
    from tlcr.cli import app
    from tlcr.core.exit_codes import ExitCode

    port = unused_port()
    result = CliRunner().invoke(app, ["eval", "--policy", f"a={tiny_model_dir}", "--reward-url",
                                      f"http://127.0.0.1:{port}", "--output-dir", str(tmp_path / "report"),
                                      "--data-limit", "2", "--reward-deadline", "1"])
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert f"127.0.0.1:{port}" in result.output and "unavailable" in result.output
    assert not (tmp_path / "report" / "responses.jsonl").exists()  # stopped before generating anything
