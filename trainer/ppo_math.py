"""The pure maths of PPO with dense per-token rewards: masks, KL, reward shaping, GAE, clipped losses.

Index convention (every tensor here is [batch, T] over *response* positions, right-padded):
position t holds response token y_t, the action taken in state (prompt, y_<t). So log π(y_t | ·),
the reference log-prob, the KL term, the value V(prompt, y_<t) and the dense reward of token y_t all sit
at index t: a token's reward lands on the action that generated it, never one step late.

`mask[b, t]` is True for actions that belong to the episode: every generated token up to and including
the first EOS, or every generated token when the response was truncated without EOS. Padding is False
and contributes nothing to rewards, advantages or losses.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over masked-in entries; 0 where nothing is masked in (never NaN)."""
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    centered = (values - mean) ** 2
    count = mask.to(values.dtype).sum()
    variance = masked_sum(centered, mask) / count.clamp(min=1)
    if unbiased and count > 1:
        # Bessel's correction: whitening a handful of tokens should not shrink the scale.
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked-in entries (mean kept when `shift_mean` is False); 0 outside the mask."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row, or the row length when there is none."""
    length = bools.shape[-1]
    positions = torch.arange(length, device=bools.device).expand_as(bools)
    return torch.where(bools, positions, torch.full_like(positions, length)).min(-1).values


def response_lengths(response_ids: torch.Tensor, eos_token_ids: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of actions per response, whether it ended with EOS).

    A response ending in EOS has its EOS counted as its last action; one truncated at the token limit
    keeps all its tokens. Whatever the generator padded with after EOS (often the EOS id itself) is ignored.
    """
    eos = torch.as_tensor([eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids),
                          device=response_ids.device)
    is_eos = torch.isin(response_ids, eos)
    first_eos = first_true_indices(is_eos)
    ended = first_eos < response_ids.shape[1]
    lengths = torch.where(ended, first_eos + 1, torch.full_like(first_eos, response_ids.shape[1]))
    return lengths, ended


def mask_from_lengths(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                 estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-action estimate of KL(π || π_ref) from sampled tokens; 0 outside the mask.

    k1 = log π − log π_ref (unbiased, can be negative per token); k3 = (ρ − 1) − log ρ with
    ρ = π_ref / π (unbiased, always ≥ 0, lower variance; Schulman's "Approximating KL divergence").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")
    return kl * mask.to(kl.dtype)


def last_token_indices(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last masked-in action per row (0 for an all-False row)."""
    return (mask.long().sum(1) - 1).clamp(min=0)


def place_on_last_token(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A [B] tensor of sequence scores as [B, T] with each score on its response's last action."""
    placed = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    rows = torch.arange(mask.shape[0], device=mask.device)
    placed[rows, last_token_indices(mask)] = scores * mask.any(1).to(scores.dtype)
    return placed


def shape_rewards(kl: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                  dense_rewards: torch.Tensor | None = None,
                  sequence_scores: torch.Tensor | None = None) -> torch.Tensor:
    """r_t = −β·KL_t + dense_t (+ the sequence score on the last action); 0 outside the mask.

    `dense_rewards` is [B, T] already aligned to actions (dense_t of token y_t at index t);
    `sequence_scores` is [B] (the `seq` baseline, or a missing-EOS penalty).
    """
    rewards = -kl_coef * kl
    if dense_rewards is not None:
        rewards = rewards + dense_rewards
    if sequence_scores is not None:
        rewards = rewards + place_on_last_token(sequence_scores.to(rewards.dtype), mask)
    return rewards * mask.to(rewards.dtype)


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
                   bootstrap_values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response actions → (advantages, returns), 0 outside the mask.

    δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}. After the last action the next value is
    `bootstrap_values` ([B]; the value of the state after the last token, for responses cut at the token
    limit that should not be treated as finished) or 0 (the episode ended).
    """
    maskf = mask.to(values.dtype)
    values = values * maskf
    rewards = rewards * maskf
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    if bootstrap_values is not None:
        rows = torch.arange(mask.shape[0], device=mask.device)
        next_values[rows, last_token_indices(mask)] += bootstrap_values.to(values.dtype) * mask.any(1)
    deltas = (rewards + gamma * next_values - values) * maskf
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        running = deltas[:, t] + gamma * lam * running * maskf[:, t]
        advantages[:, t] = running
    advantages = advantages * maskf
    return advantages, (advantages + values) * maskf


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate → (loss, clip fraction, approx KL(old || new)), token means over the mask."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    approx_kl = 0.5 * masked_mean(log_ratio.pow(2), mask)
    return loss, clip_fraction.detach(), approx_kl.detach()


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """½·max((V − R)², (V_clipped − R)²) with V_clipped = V_old + clip(V − V_old, ±c) → (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns).pow(2)
    clipped_error = (clipped_values - returns).pow(2)
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clip_fraction = masked_mean((clipped_error > unclipped_error).to(values.dtype), mask)
    return loss, clip_fraction.detach()


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(R − V) / Var(R): 1 for a perfect value function, ≤ 0 for one no better than a constant."""
    return 1.0 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)
