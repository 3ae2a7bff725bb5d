"""PPO maths against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tlcr.trainer.ppo_math import (
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    first_true_indices,
    gae_advantages,
    kl_per_token,
    mask_from_lengths,
    masked_mean,
    masked_whiten,
    place_on_last_token,
    response_lengths,
    shape_rewards,
)

EOS = 0
PAD = 1


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_response_lengths_eos_truncation_and_padding() -> None:
    responses = torch.tensor([
        [5, 6, EOS, PAD, PAD],  # EOS at 2: three actions, EOS included
        [5, 6, 7, 8, 9],        # truncated without EOS: all five
        [EOS, PAD, PAD, PAD, PAD],  # EOS straight away: one action
        [5, EOS, EOS, EOS, EOS],  # generator padded with the EOS id itself
    ])
    lengths, ended = response_lengths(responses, EOS)
    assert lengths.tolist() == [3, 5, 1, 2]
    assert ended.tolist() == [True, False, True, True]
    mask = mask_from_lengths(lengths, 5)
    assert mask.tolist()[0] == [True, True, True, False, False]
    assert mask.tolist()[1] == [True] * 5
    # Several EOS ids (e.g. chat models): the first of any counts.
    lengths, ended = response_lengths(torch.tensor([[5, 9, 6, 0]]), [9, 0])
    assert lengths.tolist() == [2] and ended.tolist() == [True]


def test_first_true_indices() -> None:
    bools = torch.tensor([[False, True, True], [False, False, False], [True, False, False]])
    assert first_true_indices(bools).tolist() == [1, 3, 0]


def test_kl_estimators_by_hand() -> None:
    logp = t([[math.log(0.5), math.log(0.2), math.log(0.9)]])
    ref = t([[math.log(0.25), math.log(0.4), math.log(0.1)]])
    mask = torch.tensor([[True, True, False]])
    k1 = kl_per_token(logp, ref, mask, "k1")
    assert k1[0].tolist() == pytest.approx([math.log(2), math.log(0.5), 0.0])
    k3 = kl_per_token(logp, ref, mask, "k3")
    # k3 = (ρ − 1) − log ρ with ρ = ref/π: ρ = 0.5 → 0.5 − 1 + log 2; ρ = 2 → 1 − log 2.
    assert k3[0].tolist() == pytest.approx([-0.5 + math.log(2), 1 - math.log(2), 0.0])
    with pytest.raises(ValueError, match="k2"):
        kl_per_token(logp, ref, mask, "k2")  # type: ignore[arg-type]


def test_shape_rewards_dense_on_its_own_action() -> None:
    kl = t([[0.1, 0.2, 0.3, 0.0], [0.4, 0.0, 0.0, 0.0]])
    dense = t([[0.5, -1.0, 0.25, 0.0], [2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    rewards = shape_rewards(kl, mask, kl_coef=0.1, dense_rewards=dense)
    assert rewards[0].tolist() == pytest.approx([0.5 - 0.01, -1.0 - 0.02, 0.25 - 0.03, 0.0])
    assert rewards[1].tolist() == pytest.approx([2.0 - 0.04, 0.0, 0.0, 0.0])


def test_sequence_score_lands_on_last_action() -> None:
    mask = torch.tensor([[True, True, True, False], [True, True, True, True], [False, False, False, False]])
    placed = place_on_last_token(t([[1.5, -2.0, 7.0]])[0], mask)
    assert placed.tolist() == [[0, 0, 1.5, 0], [0, 0, 0, -2.0], [0, 0, 0, 0]]
    rewards = shape_rewards(torch.zeros(3, 4, dtype=torch.float64), mask, 0.1,
                            sequence_scores=t([[1.5, -2.0, 7.0]])[0])
    assert rewards.tolist() == placed.tolist()


def test_gae_by_hand() -> None:
    rewards = t([[1.0, 0.0, -1.0, 9.0]])  # the 9 is padding and must be ignored
    values = t([[0.5, 0.2, 0.1, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    # δ2 = −1 + 0 − 0.1 = −1.1; δ1 = 0 + 0.1 − 0.2 = −0.1; δ0 = 1 + 0.2 − 0.5 = 0.7
    # A2 = −1.1; A1 = −0.1 + 0.5·(−1.1) = −0.65; A0 = 0.7 + 0.5·(−0.65) = 0.375
    assert advantages[0].tolist() == pytest.approx([0.375, -0.65, -1.1, 0.0])
    assert returns[0].tolist() == pytest.approx([0.875, -0.45, -1.0, 0.0])


def test_gae_discount_and_bootstrap_for_truncated_responses() -> None:
    rewards = t([[0.0, 1.0], [0.0, 1.0]])
    values = t([[0.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True]])
    # Row 0 ended (EOS): nothing after. Row 1 was truncated: bootstrap from V(state after token 1) = 2.
    advantages, _ = gae_advantages(rewards, values, mask, gamma=0.9, lam=1.0,
                                   bootstrap_values=t([[0.0, 2.0]])[0])
    assert advantages[0].tolist() == pytest.approx([0.9, 1.0])
    assert advantages[1].tolist() == pytest.approx([0.9 * (1 + 0.9 * 2), 1 + 0.9 * 2])


def test_negative_token_reward_gives_negative_advantage_on_exactly_its_action() -> None:
    """Token 2 of 5 is bad (dense −1); all others neutral; the critic knows nothing (V = 0)."""
    dense = t([[0.0, 0.0, -1.0, 0.0, 0.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    rewards = shape_rewards(torch.zeros(1, 5, dtype=torch.float64), mask, 0.1, dense_rewards=dense)
    values = torch.zeros(1, 5, dtype=torch.float64)
    # One-step advantages (λ = 0): only the action that produced the bad token is blamed.
    one_step, _ = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.0)
    assert one_step[0].tolist() == pytest.approx([0.0, 0.0, -1.0, 0.0, 0.0])
    # Paper setting γ = 1, λ = 0.95: the bad action gets the full −1, earlier actions a decayed share,
    # later actions nothing — in particular not the action one step after it.
    advantages, _ = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95)
    assert advantages[0].tolist() == pytest.approx([-0.95 ** 2, -0.95, -1.0, 0.0, 0.0])
    assert int(advantages[0].argmin()) == 2


def test_masked_mean_and_whiten() -> None:
    values = t([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert float(masked_mean(values, mask)) == pytest.approx(2.0)
    assert float(masked_mean(values, torch.zeros_like(mask))) == 0.0  # no NaN on empty masks
    whitened = masked_whiten(values, mask)
    # mean 2, unbiased variance ((1 + 0 + 1) / 2) = 1 → (−1, 0, 1); padding stays 0.
    assert whitened[0].tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    kept_mean = masked_whiten(values, mask, shift_mean=False)
    assert kept_mean[0].tolist() == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)


def test_clipped_policy_loss_by_hand() -> None:
    old = t([[0.0, 0.0, 0.0]])
    new = t([[math.log(1.5), math.log(0.5), math.log(1.1)]])  # ratios 1.5, 0.5, 1.1
    advantages = t([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, clip_fraction, approx_kl = clipped_policy_loss(new, old, advantages, mask, clip_range=0.2)
    # token 0: max(−1.5, −1.2) = −1.2 (clipped); token 1: max(−0.5, −0.8) = −0.5; token 2: max(2.2, 2.2) = 2.2
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert float(clip_fraction) == pytest.approx(1 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    assert float(approx_kl) == pytest.approx(expected_kl)


def test_clipped_value_loss_by_hand() -> None:
    old = t([[0.0, 0.0, 5.0]])
    new = t([[1.0, 0.1, 5.0]])
    returns = t([[2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    loss, clip_fraction = clipped_value_loss(new, old, returns, mask, clip_range=0.2)
    # token 0: clipped 0.2 → max((1−2)², (0.2−2)²) = 3.24; token 1: max(0.01, 0.01) = 0.01
    assert float(loss) == pytest.approx(0.5 * (3.24 + 0.01) / 2)
    assert float(clip_fraction) == pytest.approx(0.5)


def test_explained_variance() -> None:
    returns = t([[1.0, 2.0, 3.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert float(explained_variance(returns, returns, mask)) == pytest.approx(1.0)
    assert float(explained_variance(torch.full_like(returns, 2.0), returns, mask)) == pytest.approx(0.0)
