"""PPO end to end against a real reward service on loopback (subprocess, real HTTP client): every reward
mode, both token inputs (ids; text + offsets for a policy with another tokenizer), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.support.ports import unused_port
from tlcr.cli import app
from tlcr.core.exit_codes import ExitCode
from tlcr.service.launcher import ServiceProcess, start_service
from tlcr.trainer.ppo import PPOTrainer, train_ppo
from tlcr.trainer.ppo_config import PPOConfig, PPOConfigError


@pytest.fixture
def service(tiny_reward_service: ServiceProcess) -> ServiceProcess:
    return tiny_reward_service


def service_config(policy: Path, out: Path, url: str, **overrides: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        policy=str(policy), output_dir=str(out), reward_url=url, num_steps=2, rollout_batch_size=4,
        mini_batch_size=2, micro_batch_size=2, forward_batch_size=4, ppo_epochs=1, max_new_tokens=10,
        learning_rate=1e-3, data_limit=60, save_steps=2, report_to="none", reward_deadline=60.0)
    values.update(overrides)
    return PPOConfig(**values)


def read_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["tlcr", "tlcr_fixed", "tlcr_positive_only", "tlcr_negative_only", "seq"])
def test_every_reward_mode_trains_against_the_service(mode: str, service: ServiceProcess, tiny_model_dir: Path,
                                                      tiny_token_classifier_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / mode
    summary = train_ppo(service_config(tiny_model_dir, run, service.url, reward_mode=mode,
                                       value_model=str(tiny_token_classifier_dir)))
    rows = read_rows(run)
    assert [r["step"] for r in rows] == [1, 2]
    saved = json.loads((run / "ppo_config.json").read_text())
    assert saved["token_input_resolved"] == "ids"  # same tokenizer as the discriminator
    assert saved["value_source"] == str(tiny_token_classifier_dir)
    assert Path(summary["policy"], "config.json").exists()
    for row in rows:
        assert row["time/reward_fetch"] > 0
        if mode == "seq":
            assert "reward/token_mean" not in row
            continue
        token_mean = row["reward/token_mean"]
        assert -1.0 <= token_mean <= 1.0
        if mode == "tlcr_positive_only":
            assert token_mean >= 0.0
        if mode == "tlcr_negative_only":
            assert token_mean <= 0.0


def test_policy_with_another_tokenizer_sends_text_and_offsets(service: ServiceProcess, tiny_gpt2_dir: Path,
                                                              tmp_path: Path) -> None:
    run = tmp_path / "gpt2"
    train_ppo(service_config(tiny_gpt2_dir, run, service.url, value_init="sft"))
    saved = json.loads((run / "ppo_config.json").read_text())
    assert saved["token_input_resolved"] == "text"
    rows = read_rows(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(-1.0 <= r["reward/token_mean"] <= 1.0 for r in rows)


def test_value_from_a_discriminator_with_another_tokenizer_is_refused(
        service: ServiceProcess, tiny_token_classifier_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PPOConfigError, match=r"different tokenizer than the policy .* use value_init 'sft'"):
        PPOTrainer(service_config(tiny_gpt2_dir, tmp_path / "run", service.url, value_init="discriminator",
                                  value_model=str(tiny_token_classifier_dir)))


def test_cli_ppo_then_plot(service: ServiceProcess, tiny_model_dir: Path, tiny_token_classifier_dir: Path,
                           tmp_path: Path) -> None:
    run = tmp_path / "cli-run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "ppo", "--policy", str(tiny_model_dir), "--value-model", str(tiny_token_classifier_dir),
        "--reward-url", service.url, "--reward-mode", "tlcr_fixed",
        "--output-dir", str(run), "--num-steps", "2", "--rollout-batch-size", "4", "--mini-batch-size", "2",
        "--micro-batch-size", "1", "--ppo-epochs", "1", "--max-new-tokens", "8", "--learning-rate", "1e-3",
        "--data-limit", "60", "--kl-coef", "0.05", "--report-to", "none"])
    assert result.exit_code == 0, result.output
    assert "PPO done: 2 steps" in result.output
    saved = json.loads((run / "ppo_config.json").read_text())
    assert (saved["reward_mode"], saved["kl_coef"], saved["micro_batch_size"]) == ("tlcr_fixed", 0.05, 1)
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "curves.png").stat().st_size > 1000


def test_cli_reports_an_unreachable_service(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = unused_port()
    result = CliRunner().invoke(app, [
        "ppo", "--policy", str(tiny_model_dir), "--reward-url", f"http://127.0.0.1:{port}",
        "--output-dir", str(tmp_path / "run"), "--reward-deadline", "1", "--reward-max-retries", "2"])
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output  # not 2: the same command works once it is up
    assert f"127.0.0.1:{port}" in result.output and "unavailable" in result.output


@pytest.mark.parametrize("mode", ["tlcr", "seq"])
def test_prompts_too_long_for_the_service_are_dropped_in_every_mode(
        mode: str, tiny_token_classifier_dir: Path, sequence_rm_dir: Path, tiny_model_dir: Path,
        tmp_path: Path) -> None:
    """/token_rewards and /sequence_rewards both refuse items over max_length (422): drop such prompts first.

    seq mode sends decoded text, whose re-tokenization can be longer than the sampled tokens, so a seq-mode
    service also needs --truncation prompt_left (documented in docs/trainer.md)."""
    truncation = ["--truncation", "prompt_left"] if mode == "seq" else []
    with start_service(tiny_token_classifier_dir, sequence_model=sequence_rm_dir,
                       extra_args=["--torch-threads", "1", "--max-length", "30", *truncation]) as small:
        trainer = PPOTrainer(service_config(tiny_model_dir, tmp_path / mode, small.url, reward_mode=mode,
                                            value_model=str(tiny_token_classifier_dir)))
        try:
            kept = [len(ids) for ids in trainer.prompt_ids]
            assert kept and max(kept) <= 30 - 10  # room for max_new_tokens=10
            summary = trainer.train()
        finally:
            trainer.close()
    assert summary["steps"] == 2


def test_value_init_discriminator_needs_its_own_path(service: ServiceProcess, tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    """The service's /info names the model without a path: the trainer never guesses the value model from it."""
    with pytest.raises(PPOConfigError, match=r"needs the discriminator checkpoint: pass value_model"):
        PPOTrainer(service_config(tiny_model_dir, tmp_path / "run", service.url, value_init="discriminator"))
