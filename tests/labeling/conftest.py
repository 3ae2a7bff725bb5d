"""Fixtures of the labeling tests: the loopback fake OpenAI server and the tiny tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from tests.support.fake_openai_server import FakeOpenAIServer
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.models import load_tokenizer


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAIServer]:
    """A real uvicorn server on a free loopback port; tests script it with `set_script`."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def label_tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(tiny_model_dir)


@pytest.fixture
def controlled_pairs(controlled_task: ControlledTask) -> list[PreferencePair]:
    return controlled_task.pairs(12, seed=3)
