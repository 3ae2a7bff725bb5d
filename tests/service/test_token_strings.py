from pathlib import Path

import pytest

from tlcr.core.models import load_tokenizer
from tlcr.service.token_strings import token_strings


@pytest.mark.parametrize("text", [" The capital is Ünïcode ✓ 日本語 ok.", " plain text.", "✓", " a\n\nb"])
def test_token_strings_concatenate_to_the_text_one_per_token(tiny_model_dir: Path, text: str) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_strings(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize("text", [" The capital is Ünïcode ✓ 日本語 ok.\n\nAnd   spaces, emoji 🙂🙂 and 12345.",
                                  " plain text."])
def test_windowed_decoding_matches_decoding_every_prefix(tiny_model_dir: Path, tiny_gpt2_dir: Path,
                                                         text: str) -> None:
    """Tokens are decoded from 4 tokens back (linear time); that gives what decoding each whole prefix does."""
    from tlcr.service.token_strings import _prefix_token_strings

    for directory in (tiny_model_dir, tiny_gpt2_dir):
        tokenizer = load_tokenizer(directory)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert _prefix_token_strings(tokenizer, ids, 4) == _prefix_token_strings(tokenizer, ids, None)
        assert token_strings(tokenizer, ids) == _prefix_token_strings(tokenizer, ids, None)
