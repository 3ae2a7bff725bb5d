"""The options of every command that reads preference pairs (`tlcr data`, `tlcr label`, `tlcr eval`).

A dataclass with help metadata: core.config_cli turns its fields into `--source`, `--split`, `--data-dir`,
`--data-limit`, `--data-seed`, `--split-part` and `--on-error`; a command's own options class extends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tlcr.core.data.jsonl import SkipReport
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.data.sources import load_preference_pairs
from tlcr.core.data.splits import PartChoice, select_part


@dataclass(kw_only=True)
class PairsOptions:
    source: str = field(default="controlled", metadata={
        "help": "Pairs: 'controlled' (the offline task), a local .jsonl/.jsonl.gz (HH-RLHF or {prompt, chosen, "
                "rejected}), or a Hub id like Anthropic/hh-rlhf."})
    split: str = field(default="train", metadata={"help": "Hub dataset split."})
    data_dir: str = field(default="harmless-base", metadata={"help": "Hub dataset subset (HH-RLHF: harmless-base...)."})
    data_limit: int | None = field(default=None, metadata={
        "help": "Load at most this many pairs (controlled: how many to make)."})
    data_seed: int = field(default=42, metadata={"help": "Seed of the controlled task and of the 20/40/40 split."})
    split_part: PartChoice = field(default="all", metadata={
        "help": "Part of the paper's 20/40/40 split to keep (all: every pair, unsplit)."})
    on_error: Literal["raise", "skip"] = field(default="raise", metadata={
        "help": "Bad input records: raise (stop, naming file:line) or skip (count and report)."})

    def load_pairs(self, report: SkipReport) -> list[PreferencePair]:
        """The pairs of `source` (bad records counted in `report` under on_error=skip), before `split_part`."""
        return load_preference_pairs(self.source, split=self.split, data_dir=self.data_dir, limit=self.data_limit,
                                     seed=self.data_seed, on_error=self.on_error, report=report)

    def select_part(self, pairs: list[PreferencePair]) -> list[PreferencePair]:
        return select_part(pairs, self.split_part, seed=self.data_seed)
