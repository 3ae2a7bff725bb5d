"""The options of `tlcr eval`: one dataclass (help metadata), from which core.config_cli derives the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tlcr.core.data.pair_options import PairsOptions


@dataclass(kw_only=True)
class EvalOptions(PairsOptions):
    policy: list[str] = field(metadata={
        "help": "Policy checkpoint as NAME=PATH, or PATH (named after its folder); repeat for several."})
    reward_url: str = field(metadata={"help": "Reward service URL(s), comma-separated."})
    output_dir: Path = field(metadata={
        "help": "Report folder: report.html, metrics.json, PNGs, responses.jsonl."})
    source: str = field(default="controlled", metadata={
        "help": "Held-out prompts: 'controlled', a pairs .jsonl(.gz), or a Hub id."})
    split: str = field(default="test", metadata={"help": "Hub split for held-out prompts (HH-RLHF: test)."})
    data_limit: int | None = field(default=64, metadata={"help": "Number of held-out prompts."})
    data_seed: int = field(default=12345, metadata={
        "help": "Seed of the held-out controlled prompts (use one unseen in training)."})
    on_error: Literal["raise", "skip"] = field(default="skip", metadata={
        "help": "Bad held-out records: skip (count them) or raise (stop, naming file:line)."})
    seed: int = field(default=12345, metadata={"help": "Seed of the generation (with --sample)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens generated per response."})
    batch_size: int = field(default=16, metadata={"help": "Prompts generated at once."})
    sample: bool = field(default=False, metadata={"help": "Sample (top-p 0.9, T=1) instead of greedy decoding."})
    reward_api_key_env: str = field(default="TLCR_API_KEY", metadata={
        "help": "Environment variable holding the reward service's API key."})
    reward_deadline: float = field(default=600.0, metadata={
        "help": "Seconds one reward call may keep retrying before the evaluation stops (exit 3)."})
    ppo_run: list[str] = field(default_factory=list, metadata={"help": "PPO run folders to plot Fig. 7 curves from."})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible judge base URL (optional)."})
    judge_model: str = field(default="gpt-4o", metadata={"help": "Judge model name."})
    judge_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "Environment variable holding the judge's API key."})
    judge_baseline: str | None = field(default=None, metadata={
        "help": "Policy name the others are compared to (win rate)."})
    mt_bench: Path | None = field(default=None, metadata={"help": "MT-Bench question.jsonl to grade (needs a judge)."})
    mt_bench_limit: int | None = field(default=None, metadata={"help": "Grade at most this many MT-Bench questions."})
    heatmaps: int = field(default=3, metadata={"help": "Sample responses per policy shown as token heatmaps."})

    def __post_init__(self) -> None:
        policies = self.policies()
        if self.reward_deadline <= 0:
            raise ValueError(f"--reward-deadline must be positive, got {self.reward_deadline}")
        if self.mt_bench is not None and self.judge_url is None:
            raise ValueError("--mt-bench needs --judge-url (MT-Bench answers are graded by a judge)")
        if self.judge_baseline is not None and self.judge_baseline not in policies:
            raise ValueError(f"--judge-baseline {self.judge_baseline!r} is not one of the --policy names")

    def policies(self) -> dict[str, str]:
        """NAME=PATH pairs (or bare paths, named after their folder), names unique."""
        policies: dict[str, str] = {}
        for value in self.policy:
            name, sep, path = value.partition("=")
            if not sep:
                name, path = Path(value).name, value
            if not name or not path:
                raise ValueError(f"--policy expects NAME=PATH or PATH, got {value!r}")
            if name in policies:
                raise ValueError(f"--policy name {name!r} given twice")
            policies[name] = path
        return policies
