"""The PPO loop with a reward source injected through the `RewardBackend` protocol (no HTTP): outputs,
checkpoints, exact resume after a reward outage, the direction of an update, and option errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tlcr.core.models import load_causal_lm
from tlcr.service.client import RewardServiceUnavailable
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem, TokenRewardResult
from tlcr.trainer import ppo_math
from tlcr.trainer.checkpoints import CheckpointError
from tlcr.trainer.ppo import PPOTrainer, TrainingStopped, train_ppo
from tlcr.trainer.ppo_config import PPOConfig, PPOConfigError
from tlcr.trainer.rollout import forward_rollout


class ParityRewards:
    """+1 for even token ids, -1 for odd ones; can go down after `fail_after` calls."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def token_rewards(self, items: Sequence[TokenRewardItem], mode: str = "continuous",
                      threshold: float = 0.6) -> list[TokenRewardResult]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RewardServiceUnavailable("http://127.0.0.1:9: connection refused (deadline 1 s exhausted)")
        return [TokenRewardResult(rewards=[1.0 if t % 2 == 0 else -1.0 for t in item.response_token_ids or []])
                for item in items]

    def sequence_rewards(self, items: Sequence[SequenceRewardItem]) -> list[float]:
        return [1.0 for _ in items]


def tiny_config(policy: Path, out: Path, **overrides: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        policy=str(policy), output_dir=str(out), value_init="sft", token_input="ids", num_steps=3,
        rollout_batch_size=4, mini_batch_size=2, micro_batch_size=1, forward_batch_size=4, ppo_epochs=2,
        max_new_tokens=12, learning_rate=1e-3, data_limit=60, save_steps=2, report_to="none")
    values.update(overrides)
    return PPOConfig(**values)


def read_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ppo_run_writes_metrics_checkpoints_and_hf_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train_ppo(tiny_config(tiny_model_dir, run, report_to="tensorboard"), ParityRewards())
    rows = read_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("reward/token_mean", "reward/sequence", "kl", "response_length", "perplexity", "entropy",
                "loss/policy", "loss/value", "clipfrac/policy", "time/reward_fetch", "time/generate",
                "time/forward", "time/update", "oracle_score"):
        assert key in rows[-1], key
    assert -1.0 <= rows[-1]["reward/token_mean"] <= 1.0
    assert list((run / "tensorboard" / "tlcr-ppo").glob("events.out.tfevents.*"))
    # save_steps=2 → checkpoint-2, and the last step is always saved.
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    checkpoint = run / "checkpoint-3"
    for name in ("trainer_state.json", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl",
                 "policy/config.json", "value/config.json"):
        assert (checkpoint / name).exists(), name
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 3
    config = json.loads((run / "ppo_config.json").read_text())
    assert config["token_input_resolved"] == "ids" and config["reward_mode"] == "tlcr"
    # The exported policy loads like any checkpoint and differs from the starting one (it was trained).
    trained = load_causal_lm(summary["policy"], device="cpu", dtype="float32")
    start = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters(), strict=True))


def test_oracle_metric_scores_the_controlled_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tlcr.core.data.sources import load_preference_pairs
    from tlcr.core.data.splits import paper_split

    trainer = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "run"), ParityRewards())
    try:
        assert trainer.oracle is not None
        pair = paper_split(load_preference_pairs("controlled", limit=60, seed=42), seed=42)["ppo"][0]
        assert pair.prompt in trainer.prompts
        assert trainer.oracle(pair.prompt, pair.chosen) == 1.0
        assert trainer.oracle(pair.prompt, pair.rejected) < 1.0
    finally:
        trainer.close()


def test_refuses_to_mix_runs_and_resumes_only_with_a_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        PPOTrainer(tiny_config(tiny_model_dir, run, resume=True), ParityRewards())
    train_ppo(tiny_config(tiny_model_dir, run, num_steps=2), ParityRewards())
    with pytest.raises(CheckpointError, match=r"--resume .* or --overwrite"):
        PPOTrainer(tiny_config(tiny_model_dir, run), ParityRewards())


def test_outage_checkpoints_and_resume_continues_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A run that loses its reward source at step 3 saves step 2; resumed, it matches an unbroken run."""
    unbroken = tmp_path / "unbroken"
    train_ppo(tiny_config(tiny_model_dir, unbroken, num_steps=4, save_steps=10), ParityRewards())

    broken = tmp_path / "broken"
    with pytest.raises(TrainingStopped, match=r"step 3: the reward service is unavailable .*connection refused"
                       ) as stopped:
        train_ppo(tiny_config(tiny_model_dir, broken, num_steps=4, save_steps=10), ParityRewards(fail_after=2))
    assert stopped.value.step == 2 and stopped.value.checkpoint == broken / "checkpoint-2"
    assert [r["step"] for r in read_rows(broken)] == [1, 2]

    train_ppo(tiny_config(tiny_model_dir, broken, num_steps=4, save_steps=10, resume=True), ParityRewards())
    expected, resumed = read_rows(unbroken), read_rows(broken)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(expected, resumed, strict=True):
        for key in ("kl", "reward/sequence", "loss/policy", "loss/value", "response_length", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


class ScaledSequenceRewards(ParityRewards):
    """Sequence scores on an arbitrary scale: 100 + 10 × (number of even token ids in the response text)."""

    def sequence_rewards(self, items: Sequence[SequenceRewardItem]) -> list[float]:
        return [100.0 + 10.0 * len(item.response) for item in items]


def test_paper_optimizer_defaults_reach_the_optimizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert (PPOConfig.lr_scheduler, PPOConfig.adam_betas) == ("constant", (0.9, 0.95))
    trainer = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "run"), ParityRewards())
    try:
        assert {group["betas"] for group in trainer.optimizer.param_groups} == {(0.9, 0.95)}
    finally:
        trainer.close()
    summary = train_ppo(tiny_config(tiny_model_dir, tmp_path / "const", num_steps=2), ParityRewards())
    assert {row["lr"] for row in read_rows(Path(summary["output_dir"]))} == {1e-3}


def test_sequence_scores_are_normalised_by_the_sft_samples_and_survive_resume(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    config = dict(reward_mode="seq", num_steps=3, save_steps=1)
    trainer = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "run", **config), ScaledSequenceRewards())
    trainer.train()
    mean, std = trainer.sequence_score_stats  # type: ignore[misc]
    assert mean > 100.0 and std > 0.0
    scores = torch.tensor([mean, mean + std])
    assert trainer._normalized_scores(scores).tolist() == pytest.approx([0.0, 1.0], abs=1e-4)  # float32

    resumed = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "run", num_steps=4, resume=True,
                                     reward_mode="seq", save_steps=1), ScaledSequenceRewards())
    resumed.train()
    assert resumed.sequence_score_stats == pytest.approx((mean, std))

    raw = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "raw", normalize_sequence_scores=False, **config),
                     ScaledSequenceRewards())
    try:
        assert raw._normalized_scores(scores).tolist() == pytest.approx(scores.tolist())
    finally:
        raw.close()


def test_one_update_moves_probability_towards_rewarded_tokens(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, tmp_path / "run", rollout_batch_size=8, mini_batch_size=8,
                         micro_batch_size=4, ppo_epochs=4, kl_coef=0.0, lam=0.0, max_new_tokens=16,
                         learning_rate=3e-3)
    trainer = PPOTrainer(config, ParityRewards())
    try:
        collected = trainer._collect(0)
        batch, _ = trainer._advantages(collected, collected.rewards.result())
        trainer._update(batch)
        after = forward_rollout(trainer.model, batch.rollout, temperature=1.0, batch_size=8, with_values=False,
                                with_entropy=False)
    finally:
        trainer.close()
    rollout = batch.rollout
    text_mask = ppo_math.mask_from_lengths(rollout.lengths - rollout.ended.long(), rollout.mask.shape[1])
    even = text_mask & (rollout.response_ids % 2 == 0)
    odd = text_mask & (rollout.response_ids % 2 == 1)
    assert even.any() and odd.any()
    change = after.logprobs - collected.logprobs
    assert float(ppo_math.masked_mean(change, even)) > 0 > float(ppo_math.masked_mean(change, odd))
    # With λ = 0 each action's advantage has the sign of its own token's reward.
    assert bool((batch.advantages[even] > batch.advantages[odd].max()).all())


@pytest.mark.parametrize(("overrides", "message"), [
    ({"reward_mode": "dense"}, "reward_mode must be one of tlcr, tlcr_fixed, "),
    ({"value_init": "random"}, "value_init must be 'discriminator' or 'sft'"),
    ({"rollout_batch_size": 6, "mini_batch_size": 4}, r"rollout_batch_size \(6\) must be a multiple"),
    ({"mini_batch_size": 4, "micro_batch_size": 3}, r"mini_batch_size \(4\) must be a multiple"),
    ({"top_p": 0.0}, "top_p must be in"),
    ({"reward_threshold": 0.5}, "reward_threshold must be in"),
    ({"resume": True, "overwrite": True}, "resume and overwrite exclude each other"),
    ({"num_steps": 0}, "num_steps must be at least 1"),
    ({"adam_betas": (0.9, 1.0)}, r"adam_betas must be two numbers in \[0, 1\)"),
])
def test_config_errors_name_the_option(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(PPOConfigError, match=message):
        PPOConfig(policy="p", **overrides)


def test_yaml_config_with_overrides_and_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("reward_mode: tlcr_fixed\nkl_coef: 0.05\nnum_steps: 7\n")
    config = PPOConfig.from_yaml(good, policy="p", num_steps=9)
    assert (config.reward_mode, config.kl_coef, config.num_steps, config.policy) == ("tlcr_fixed", 0.05, 9, "p")
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward_mode: tlcr\nklcoef: 0.05\n")
    with pytest.raises(PPOConfigError, match=r"bad.yaml: unknown key\(s\) 'klcoef'"):
        PPOConfig.from_yaml(bad, policy="p")


def test_shipped_configs_load() -> None:
    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / "ppo").glob("*.yaml"))
    assert configs, "configs/ppo/*.yaml missing"
    for path in configs:
        PPOConfig.from_yaml(path, policy="p")
