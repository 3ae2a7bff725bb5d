"""Preference data: HH-RLHF (Hub or local files) and the built-in offline controlled task."""

from tlcr.data.pairs import PreferencePair, paper_split

__all__ = ["PreferencePair", "paper_split"]
