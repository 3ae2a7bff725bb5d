"""core.scoring: truncation, padding, position ids, and padding-independent probabilities."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlcr.core.models import load_token_classifier, load_tokenizer
from tlcr.core.scoring import (
    fit_prompt_response,
    pad_sequences,
    position_ids_from_attention_mask,
    response_token_probabilities,
    token_probabilities,
)


def test_fit_prompt_response_cuts_prompt_left_then_response_right() -> None:
    assert fit_prompt_response([1, 2, 3], [4, 5], 10) == ([1, 2, 3], [4, 5])
    assert fit_prompt_response([1, 2, 3], [4, 5], 4) == ([2, 3], [4, 5])
    assert fit_prompt_response([1, 2, 3], [4, 5], 2) == ([], [4, 5])
    assert fit_prompt_response([1, 2, 3], [4, 5, 6], 2) == ([], [4, 5])
    with pytest.raises(ValueError, match="max_length"):
        fit_prompt_response([1], [2], 0)


def test_pad_sequences_both_sides() -> None:
    ids, mask = pad_sequences([[7, 8, 9], [5]], pad_token_id=0, padding_side="right")
    assert ids.tolist() == [[7, 8, 9], [5, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_sequences([[7, 8, 9], [5]], pad_token_id=0, padding_side="left")
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="padding_side"):
        pad_sequences([[1]], 0, padding_side="middle")


def test_position_ids_count_real_tokens_only() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
    assert position_ids_from_attention_mask(mask).tolist() == [[0, 1, 2, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_gpt2_dir"])
def test_left_and_right_padding_give_identical_probabilities(fixture: str, request: pytest.FixtureRequest) -> None:
    # GPT-2 has absolute position embeddings: without explicit position ids left padding shifts its scores.
    model_dir: Path = request.getfixturevalue(fixture)
    model = load_token_classifier(model_dir, num_labels=1, device="cpu", dtype="float32").eval()
    tok = load_tokenizer(model_dir)
    texts = ["\n\nHuman: What is the capital of Kalo?\n\nAssistant: The capital of Kalo is Ven.", " Ugh.", " I might"]
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = {}
    for side in ("left", "right"):
        ids, mask = pad_sequences(seqs, tok.pad_token_id, side)
        probs = token_probabilities(model, ids, mask)
        rows[side] = [probs[i][mask[i].bool()] for i in range(len(seqs))]
    alone = [token_probabilities(model, *pad_sequences([s], tok.pad_token_id))[0] for s in seqs]
    for i in range(len(seqs)):
        assert torch.allclose(rows["left"][i], rows["right"][i], atol=1e-5)
        assert torch.allclose(rows["right"][i], alone[i], atol=1e-5)  # batch companions change nothing


def test_response_token_probabilities_align_with_response(tiny_token_classifier_dir: Path) -> None:
    model = load_token_classifier(tiny_token_classifier_dir, device="cpu", dtype="float32").eval()
    tok = load_tokenizer(tiny_token_classifier_dir)
    items = [([1, 2, 3, 4], [5, 6]), ([9], [10, 11, 12, 13, 14])]
    got = response_token_probabilities(model, tok.pad_token_id, items, max_length=5, batch_size=1)
    assert [len(g) for g in got] == [2, 5]
    full = token_probabilities(model, *pad_sequences([[2, 3, 4, 5, 6]], tok.pad_token_id))[0]
    assert got[0] == pytest.approx(full[3:5].tolist(), abs=1e-6)
