"""Packed scoring (tlcr.core.packing): a batch laid end to end in one row without padding, shared prompts
once, equals the padded forward of each prompt + response to 1e-5 in fp32, on several architectures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForTokenClassification,
    LlamaConfig,
    LlamaForTokenClassification,
    MistralConfig,
    MistralForTokenClassification,
    Qwen2Config,
    Qwen2ForTokenClassification,
)

from tlcr.core.models import load_token_classifier
from tlcr.core.packing import PackingUnsupported, packed_attention, packed_token_logits, packing_problem
from tlcr.core.scoring import pad_sequences, token_probabilities

Items = list[tuple[list[int], list[int]]]


def _padded(model: torch.nn.Module, items: Items) -> list[np.ndarray]:
    """D at each response token from the ordinary padded forward of prompt + response."""
    ids, mask = pad_sequences([p + r for p, r in items], 0)
    probs = token_probabilities(model, ids, mask).numpy()
    return [probs[k, len(p):len(p) + len(r)] for k, (p, r) in enumerate(items)]


def _mixed(vocab: int, seed: int = 0) -> Items:
    """Three shared prompts (1, 40 and 7 tokens) with responses of 1 to 30 tokens interleaved, a prompt
    used once, an empty prompt, an empty response."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, vocab, n).tolist() for n in (1, 40, 7)]
    rows = [1, 0, 2, 1, 0, 1, 2]
    items = [(prompts[p], rng.integers(1, vocab, n).tolist()) for p, n in zip(rows, (3, 17, 1, 30, 9, 2, 12),
                                                                               strict=True)]
    items += [(rng.integers(1, vocab, 25).tolist(), rng.integers(1, vocab, 6).tolist()),
              ([], rng.integers(1, vocab, 11).tolist()), (prompts[1], [])]
    return items


def _assert_equal(model: torch.nn.Module, items: Items, share_prompts: bool = True) -> None:
    got = [torch.sigmoid(x).numpy() for x in packed_token_logits(model, items, share_prompts=share_prompts)]
    for (_, response), g, expected in zip(items, got, _padded(model, items), strict=True):
        assert g.shape == (len(response),)
        if response:
            assert np.abs(g - expected).max() <= 1e-5


def _llama(attention: str = "sdpa", hidden: int = 64, layers: int = 4, heads: int = 4,
           kv_heads: int = 2) -> LlamaForTokenClassification:
    torch.manual_seed(0)
    return LlamaForTokenClassification(LlamaConfig(
        vocab_size=300, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256, num_labels=1,
        attn_implementation=attention)).eval()


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_packed_equals_padded_on_the_tiny_discriminators(which: str, tiny_token_classifier_dir: Path,
                                                         tiny_gpt2_discriminator_dir: Path) -> None:
    path = tiny_token_classifier_dir if which == "llama" else tiny_gpt2_discriminator_dir
    model = load_token_classifier(path, device="cpu", dtype="float32").eval()
    assert packing_problem(model) is None
    for share_prompts in (True, False):
        _assert_equal(model, _mixed(model.config.vocab_size), share_prompts)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_equals_padded_with_several_heads_layers_and_grouped_kv(attention: str) -> None:
    model = _llama(attention, hidden=128, layers=6, heads=8, kv_heads=2)
    for seed in range(3):
        _assert_equal(model, _mixed(300, seed))
    assert model.config._attn_implementation == attention  # restored after each packed forward
    # the context matters: a response scored without its prompt gives other values
    items = _mixed(300)
    alone = packed_token_logits(model, [([], items[0][1])])[0]
    assert (alone - packed_token_logits(model, items[:1])[0]).abs().max() > 1e-4


@pytest.mark.parametrize("which", ["qwen2", "gpt2-absolute-positions"])
def test_packed_equals_padded_on_other_architectures(which: str) -> None:
    torch.manual_seed(0)
    if which == "qwen2":  # biased q/k/v projections, grouped KV heads
        model: torch.nn.Module = Qwen2ForTokenClassification(Qwen2Config(
            vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, num_labels=1))
    else:  # learned absolute positions: each token must get its position in prompt + response
        model = GPT2ForTokenClassification(GPT2Config(vocab_size=300, n_embd=64, n_layer=3, n_head=4,
                                                      n_positions=256, num_labels=1))
    model.eval()
    assert packing_problem(model) is None
    _assert_equal(model, _mixed(300, seed=1))


def test_a_batch_of_one_and_an_empty_batch() -> None:
    model = _llama(layers=2)
    _assert_equal(model, [([5, 6, 7], [8, 9])])
    _assert_equal(model, [([5, 6, 7], [8, 9]), ([5, 6, 7], [10])])  # one prompt shared by two
    assert packed_token_logits(model, []) == []
    assert [x.numel() for x in packed_token_logits(model, [([], [])])] == [0]


def test_what_cannot_be_packed_is_named() -> None:
    sliding = MistralForTokenClassification(MistralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, sliding_window=8, num_labels=1))
    assert "sliding" in (packing_problem(sliding) or "")
    query = torch.zeros(1, 2, 3, 4)
    with pytest.raises(PackingUnsupported, match="outside a packed forward"):
        packed_attention(torch.nn.Module(), query, query, query, None)
