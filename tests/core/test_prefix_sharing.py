"""Prefix-shared scoring (tlcr.core.scoring): each distinct prompt forwarded once, its KV cache read by each
of its responses, equals the ordinary forward of the concatenated sequences to 1e-5 in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForTokenClassification, MistralConfig, MistralForTokenClassification

from tlcr.core.models import load_token_classifier
from tlcr.core.scoring import (
    pad_sequences,
    prefix_shared_token_probabilities,
    prefix_sharing_problem,
    shared_prompt_rows,
    token_probabilities,
)


def _whole(model: torch.nn.Module, prompts: list[list[int]], rows: list[int],
           responses: list[list[int]]) -> list[np.ndarray]:
    ids, mask = pad_sequences([prompts[p] + r for p, r in zip(rows, responses, strict=True)], 0)
    probs = token_probabilities(model, ids, mask).numpy()
    return [probs[k, len(prompts[p]):len(prompts[p]) + len(r)] for k, (p, r) in enumerate(zip(rows, responses,
                                                                                             strict=True))]


def _mixed(vocab: int, seed: int = 0) -> tuple[list[list[int]], list[int], list[list[int]]]:
    """Three prompts (1, 40 and 7 tokens), rows interleaved, responses of 1 to 30 tokens."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, vocab, n).tolist() for n in (1, 40, 7)]
    rows = [1, 0, 2, 1, 0, 1, 2]
    responses = [rng.integers(1, vocab, n).tolist() for n in (3, 17, 1, 30, 9, 2, 12)]
    return prompts, rows, responses


def _random_llama(attention: str, hidden: int = 64, layers: int = 4, heads: int = 4,
                  kv_heads: int = 2) -> LlamaForTokenClassification:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=256, num_labels=1, attn_implementation=attention)
    return LlamaForTokenClassification(config).eval()


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_shared_equals_whole_on_the_tiny_discriminators(which: str, tiny_token_classifier_dir: Path,
                                                        tiny_gpt2_discriminator_dir: Path) -> None:
    path = tiny_token_classifier_dir if which == "llama" else tiny_gpt2_discriminator_dir
    model = load_token_classifier(path, device="cpu", dtype="float32").eval()
    assert prefix_sharing_problem(model) is None
    prompts, rows, responses = _mixed(model.config.vocab_size)
    shared = prefix_shared_token_probabilities(model, 0, prompts, rows, responses).numpy()
    for k, expected in enumerate(_whole(model, prompts, rows, responses)):
        assert np.abs(shared[k, :len(responses[k])] - expected).max() <= 1e-5


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_equals_whole_with_several_heads_layers_and_grouped_kv(attention: str) -> None:
    model = _random_llama(attention, hidden=128, layers=6, heads=8, kv_heads=2)
    assert prefix_sharing_problem(model) is None
    for seed in range(3):
        prompts, rows, responses = _mixed(300, seed)
        shared = prefix_shared_token_probabilities(model, 0, prompts, rows, responses).numpy()
        for k, expected in enumerate(_whole(model, prompts, rows, responses)):
            assert np.abs(shared[k, :len(responses[k])] - expected).max() <= 1e-5
        # the context matters: scoring a response without its prompt gives other values
        alone = _whole(model, [[]], [0], [responses[0]])[0]
        assert np.abs(alone - _whole(model, prompts, rows[:1], responses[:1])[0]).max() > 1e-4


def test_positions_past_the_longest_row_are_never_embedded() -> None:
    # A long prompt with a short response next to a short prompt with a long response: the padded
    # response positions of the first row would pass max_position_embeddings if they were numbered on.
    model = _random_llama("sdpa")
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 300, 250).tolist(), rng.integers(1, 300, 2).tolist()]
    rows, responses = [0, 0, 1, 1], [[5], [6, 7], rng.integers(1, 300, 200).tolist(), [9]]
    shared = prefix_shared_token_probabilities(model, 0, prompts, rows, responses).numpy()
    for k, expected in enumerate(_whole(model, prompts, rows, responses)):
        assert np.abs(shared[k, :len(responses[k])] - expected).max() <= 1e-5


def test_architectures_that_cannot_share_are_named() -> None:
    sliding = MistralForTokenClassification(MistralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, sliding_window=8, num_labels=1))
    assert "sliding" in (prefix_sharing_problem(sliding) or "")
    model = _random_llama("sdpa", layers=1)
    model.config._attn_implementation = "flex_attention"
    assert "flex_attention" in (prefix_sharing_problem(model) or "")


def test_prompt_groups_skip_empty_and_unshared_prompts() -> None:
    groups = shared_prompt_rows([[1, 2], [], [3], [1, 2], [], [3, 4], [1, 2], [3]])
    assert groups == {(1, 2): [0, 3, 6], (3,): [2, 7]}


def test_empty_prompts_are_refused() -> None:
    model = _random_llama("sdpa", layers=1)
    with pytest.raises(ValueError, match="non-empty prompts"):
        prefix_shared_token_probabilities(model, 0, [[]], [0], [[1, 2]])
