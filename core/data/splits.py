"""The paper's deterministic SFT / reward-model / PPO split, and the names of its parts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, get_args

from tlcr.core.data.pairs import PreferencePair

SplitPart = Literal["sft", "rm", "ppo"]
PartChoice = Literal["all", "sft", "rm", "ppo"]  # a command's choice: one part, or every pair unsplit
PART_CHOICES: tuple[str, ...] = get_args(PartChoice)


def paper_split(pairs: Sequence[PreferencePair], seed: int = 42,
                fractions: tuple[float, float, float] = (0.2, 0.4, 0.4)) -> dict[str, list[PreferencePair]]:
    """The paper's deterministic SFT / reward-model / PPO split (20 / 40 / 40 by default)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_sft = round(fractions[0] * len(pairs))
    n_rm = round(fractions[1] * len(pairs))
    pick = lambda idx: [pairs[i] for i in idx]  # noqa: E731
    return {"sft": pick(order[:n_sft]), "rm": pick(order[n_sft:n_sft + n_rm]), "ppo": pick(order[n_sft + n_rm:])}


def check_part(part: str) -> PartChoice:
    """`part` if it names a split part or "all"; else a ValueError listing the choices."""
    if part not in PART_CHOICES:
        raise ValueError(f"split part must be one of {', '.join(PART_CHOICES)}, not {part!r}")
    return part  # type: ignore[return-value]


def select_part(pairs: Sequence[PreferencePair], part: str, seed: int = 42) -> list[PreferencePair]:
    """The pairs of one part of the paper's split ("all": every pair, unsplit)."""
    check_part(part)
    return list(pairs) if part == "all" else paper_split(pairs, seed=seed)[part]
