"""Reward modes, defined once: the service's per-token transforms, the trainer's modes and their report labels."""

from __future__ import annotations

from enum import Enum


class RewardMode(str, Enum):
    """How the service turns a token's discriminator probability p = P(token is positive) into a reward."""

    continuous = "continuous"  # r = 2p - 1 (TLCR)
    fixed = "fixed"  # +1 if p >= tau, -1 if p <= 1 - tau, else 0 (TLCR_fixed)
    positive_only = "positive_only"  # max(2p - 1, 0) (ablation: w/o negative)
    negative_only = "negative_only"  # min(2p - 1, 0) (ablation: w/o positive)
    probability = "probability"  # p


class PolicyRewardMode(str, Enum):
    """What a PPO run optimises: token rewards of one service mode, or one sequence score (the baseline)."""

    tlcr = "tlcr"
    tlcr_fixed = "tlcr_fixed"
    seq = "seq"
    tlcr_positive_only = "tlcr_positive_only"
    tlcr_negative_only = "tlcr_negative_only"

    @property
    def service_mode(self) -> RewardMode | None:
        """The service's token mode; None: the run asks POST /sequence_rewards for one score per response."""
        return _SERVICE_MODE[self]

    @property
    def label(self) -> str:
        """The method's name in reports and tables (the paper's rows)."""
        return _LABEL[self]

    @classmethod
    def parse(cls, name: str) -> PolicyRewardMode:
        """The mode called `name`, or a ValueError listing the modes."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown reward mode {name!r}; choose from {', '.join(m.value for m in cls)}") from None


_SERVICE_MODE: dict[PolicyRewardMode, RewardMode | None] = {
    PolicyRewardMode.tlcr: RewardMode.continuous,
    PolicyRewardMode.tlcr_fixed: RewardMode.fixed,
    PolicyRewardMode.seq: None,
    PolicyRewardMode.tlcr_positive_only: RewardMode.positive_only,
    PolicyRewardMode.tlcr_negative_only: RewardMode.negative_only,
}
_LABEL: dict[PolicyRewardMode, str] = {
    PolicyRewardMode.tlcr: "TLCR",
    PolicyRewardMode.tlcr_fixed: "TLCR_fixed",
    PolicyRewardMode.seq: "PPO_seq",
    PolicyRewardMode.tlcr_positive_only: "TLCR w/o negative",
    PolicyRewardMode.tlcr_negative_only: "TLCR w/o positive",
}
