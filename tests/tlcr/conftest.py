"""Fixtures of the tokenization tests: each real tokenizer, and real HH-RLHF pairs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from tlcr.data.pairs import PreferencePair
from tlcr.data.sources import load_preference_pairs
from tlcr.models import load_tokenizer


@pytest.fixture(scope="module", params=["llama2", "gpt2", "qwen2"])
def named_tokenizer(request: pytest.FixtureRequest,
                    real_tokenizer_dir: Callable[[str], Path]) -> tuple[str, PreTrainedTokenizerBase]:
    """(name, tokenizer) for each real tokenizer in ../shared/tokenizers."""
    return request.param, load_tokenizer(real_tokenizer_dir(request.param))


@pytest.fixture(scope="module")
def hh_pairs(hh_harmless_test: Path) -> list[PreferencePair]:
    """The first 40 usable pairs of the shared HH-RLHF harmless-base test sample."""
    return load_preference_pairs(hh_harmless_test, on_error="skip")[:40]
