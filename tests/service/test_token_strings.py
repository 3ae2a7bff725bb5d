from pathlib import Path

import pytest

from service.routers.rewards import token_strings
from tlcr.models import load_tokenizer


@pytest.mark.parametrize("text", [" The capital is Ünïcode ✓ 日本語 ok.", " plain text.", "✓", " a\n\nb"])
def test_token_strings_concatenate_to_the_text_one_per_token(tiny_model_dir: Path, text: str) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_strings(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
