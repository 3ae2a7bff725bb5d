"""Prefix sharing in the service: the token scorer with sharing on equals it with sharing off (1e-5 fp32) on
mixed batches, text items with their boundary token and truncation, and over real HTTP across requests; the
batcher groups a prompt's sequences and budgets the tokens computed; models that cannot share fall back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForTokenClassification, MistralConfig, MistralForTokenClassification

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.models import build_tiny_model, load_token_classifier, load_tokenizer, mark_discriminator_config
from tlcr.service.batcher import DynamicBatcher, Shape, computed_tokens, select_shared_batch
from tlcr.service.items import Limits, prepare_token_item
from tlcr.service.launcher import ServiceProcess
from tlcr.service.schemas import TokenRewardItem
from tlcr.service.scorer import Encoded, TokenScorer
from tlcr.service.settings import ServiceSettings


def _discriminator(out: Path, hidden: int, layers: int, heads: int) -> Path:
    base = build_tiny_model(ControlledTask(seed=0).corpus(), out / "base", vocab_size=1024, hidden_size=hidden,
                            num_layers=layers, num_heads=heads)
    model = load_token_classifier(base, num_labels=1, device="cpu", dtype="float32")
    mark_discriminator_config(model.config, max_length=160, base_model=str(base))
    model.save_pretrained(out / "discriminator")
    load_tokenizer(base).save_pretrained(out / "discriminator")
    return out / "discriminator"


@pytest.fixture(scope="module", params=[("demo-sized", "packed"), ("demo-sized", "padded"),
                                        ("several-heads-and-layers", "packed"), ("several-heads-and-layers", "padded")],
                ids="-".join)
def scorers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenScorer,
                                                                                                 TokenScorer]:
    """(sharing on, sharing off and padded: the path before sharing) on one checkpoint: the demo model's size
    (hidden 64, 2 layers, 4 heads) or hidden 128 × 6 layers × 8 heads; sharing packed (the default) or
    through the KV cache of padded batches."""
    size = {"demo-sized": (64, 2, 4), "several-heads-and-layers": (128, 6, 8)}[request.param[0]]
    path = _discriminator(tmp_path_factory.mktemp(request.param[0]), *size)
    shared = TokenScorer.load(str(path), device="cpu", dtype="float32")
    if request.param[1] == "packed":
        assert shared.enable_packing()
    assert shared.enable_prefix_sharing()
    whole = TokenScorer.load(str(path), device="cpu", dtype="float32")
    assert not whole.prefix_sharing and not whole.packing
    return shared, whole


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and np.abs(x - y).max() <= 1e-5


def test_mixed_batches_score_as_without_sharing(scorers: tuple[TokenScorer, TokenScorer]) -> None:
    shared, whole = scorers
    rng = np.random.default_rng(0)
    grpo = rng.integers(2, shared.vocab_size, 60).tolist()
    other = rng.integers(2, shared.vocab_size, 9).tolist()
    batch = [Encoded(grpo, rng.integers(2, shared.vocab_size, int(m)).tolist()) for m in (1, 30, 7, 55, 12, 3, 20, 9)]
    batch += [Encoded(other, [5]), Encoded(other, rng.integers(2, shared.vocab_size, 40).tolist())]
    batch += [Encoded(rng.integers(2, shared.vocab_size, int(n)).tolist(), rng.integers(2, shared.vocab_size,
                                                                                          int(m)).tolist())
              for n, m in [(0, 9), (0, 9), (1, 4), (80, 70), (33, 1)]]
    order = rng.permutation(len(batch))
    mixed = [batch[i] for i in order]
    _assert_same(shared.probabilities(mixed), whole.probabilities(mixed))
    # and each item alone (no companions, so no sharing) equals its value in the shared batch
    _assert_same(shared.probabilities(mixed), [whole.probabilities([e])[0] for e in mixed])
    assert shared.prefix_sharing  # no fallback happened
    if shared.packing:  # packed without sharing too
        shared.prefix_sharing = False
        try:
            _assert_same(shared.probabilities(mixed), whole.probabilities(mixed))
        finally:
            shared.prefix_sharing = True
        assert shared.packing


def test_text_items_keep_their_boundary_token_and_truncation(scorers: tuple[TokenScorer, TokenScorer]) -> None:
    shared, whole = scorers
    pairs = ControlledTask(seed=0).pairs(6, seed=3)
    prompt = "".join(p.prompt for p in ControlledTask(seed=0).pairs(40, seed=2))  # longer than max_length
    responses = [p.rejected for p in pairs] + [p.chosen for p in pairs] + [" x", "!"]
    limits = Limits(vocab_size=shared.vocab_size, max_length=shared.max_length, truncation="prompt_left")
    prepared = [prepare_token_item(i, TokenRewardItem(prompt=prompt, response=r), shared.tokenizer, limits)
                for i, r in enumerate(responses)]
    assert all(p.dropped_prompt_tokens > 0 for p in prepared)  # truncation happened
    encoded = [p.encoded for p in prepared]
    assert all(e.length == shared.max_length for e in encoded)
    # equal response lengths keep equal prompts, which are shared
    assert len({tuple(e.prompt_ids) for e in encoded}) < len(encoded)
    _assert_same(shared.probabilities(encoded), whole.probabilities(encoded))
    # the first response token is the boundary: its probability is there and equal
    for s, w in zip(shared.probabilities(encoded), whole.probabilities(encoded), strict=True):
        assert abs(float(s[0]) - float(w[0])) <= 1e-5


def _tiny_scorer(model: torch.nn.Module, tokenizer_dir: Path) -> TokenScorer:
    model.config.tlcr = {"kind": "tlcr-token-discriminator", "max_length": 64}
    return TokenScorer(model, load_tokenizer(tokenizer_dir), "tiny", None, 64)


def _model_without(architecture: str) -> torch.nn.Module:
    """A model that can neither share nor pack: BERT attends both ways (a prompt's states depend on the response,
    and it takes no cache), Mistral here has a sliding window."""
    torch.manual_seed(0)
    if architecture == "bert":
        return BertForTokenClassification(BertConfig(
            vocab_size=600, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_labels=1)).eval()
    return MistralForTokenClassification(MistralConfig(
        vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, sliding_window=8, num_labels=1)).eval()


@pytest.mark.parametrize("architecture", ["bert", "mistral-sliding-window"])
def test_models_that_cannot_share_fall_back_with_one_log_line(architecture: str, tiny_token_classifier_dir: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    scorer = _tiny_scorer(_model_without(architecture), tiny_token_classifier_dir)
    with caplog.at_level(logging.WARNING, logger="tlcr.service.scorer"):
        assert not scorer.enable_prefix_sharing()
        batch = [Encoded([3, 4, 5, 6], [7, 8]), Encoded([3, 4, 5, 6], [9])]
        result = scorer.probabilities(batch)
        scorer.probabilities(batch)
    lines = [r for r in caplog.records if "prefix sharing is off" in r.getMessage()]
    assert len(lines) == 1
    assert ("takes no KV cache" if architecture == "bert" else "sliding") in lines[0].getMessage()
    _assert_same(result, [scorer.probabilities([e])[0] for e in batch])


@pytest.mark.parametrize("architecture", ["bert", "mistral-sliding-window"])
def test_models_that_cannot_pack_fall_back_with_one_log_line(architecture: str, tiny_token_classifier_dir: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    model = _model_without(architecture)
    scorer = _tiny_scorer(model, tiny_token_classifier_dir)
    implementation = model.config._attn_implementation
    with caplog.at_level(logging.WARNING, logger="tlcr.service.scorer"):
        assert not scorer.enable_packing()
        batch = [Encoded([3, 4, 5, 6], [7, 8]), Encoded([1, 2], [9])]
        result = scorer.probabilities(batch)
        scorer.probabilities(batch)
    lines = [r for r in caplog.records if "packing is off" in r.getMessage()]
    assert len(lines) == 1
    assert ("attends both ways" if architecture == "bert" else "sliding") in lines[0].getMessage()
    assert model.config._attn_implementation == implementation  # restored after the failed probe
    _assert_same(result, [scorer.probabilities([e])[0] for e in batch])


def test_the_settings_are_on_by_default_and_can_be_turned_off(tiny_token_classifier_dir: Path) -> None:
    assert ServiceSettings(model=str(tiny_token_classifier_dir)).prefix_sharing
    assert not ServiceSettings(model=str(tiny_token_classifier_dir), prefix_sharing=False).prefix_sharing
    assert ServiceSettings(model=str(tiny_token_classifier_dir)).packing
    assert not ServiceSettings(model=str(tiny_token_classifier_dir), packing=False).packing


# --- batch selection and the token budget (pure) ------------------------------------------------------


def test_computed_tokens_count_a_shared_prompt_once() -> None:
    grpo = [Shape(100 + r, "p", 100) for r in (10, 20, 30)]  # one prompt of 100, responses 10..30
    assert computed_tokens(grpo) == 100 + 3 * 30
    assert computed_tokens(grpo[:1]) == 110  # alone: forwarded whole
    assert computed_tokens([*grpo, Shape(50), Shape(70, "q", 60)]) == 100 + 3 * 30 + 2 * 70
    assert computed_tokens([Shape(10), Shape(40)]) == 80  # without prompts: padded, as before


def test_packed_computed_tokens_count_no_padding() -> None:
    grpo = [Shape(100 + r, "p", 100) for r in (10, 20, 30)]
    assert computed_tokens(grpo, packed=True) == 100 + 10 + 20 + 30
    assert computed_tokens(grpo[:1], packed=True) == 110
    assert computed_tokens([*grpo, Shape(50), Shape(70, "q", 60)], packed=True) == 160 + 50 + 70
    assert computed_tokens([Shape(10), Shape(40)], packed=True) == 50
    shapes = [Shape(160, "p", 150), Shape(20), Shape(158, "q", 150), *[Shape(150 + r, "p", 150) for r in (8, 12, 9)]]
    # p packed: 150 + 10 + 8 + 12 + 9 = 189; a padded batch would compute 150 + 4 × 12 = 198
    assert select_shared_batch(shapes, anchor=0, token_budget=190, max_batch_size=8, packed=True) == [0, 3, 4, 5]
    assert select_shared_batch(shapes, anchor=0, token_budget=190, max_batch_size=8) == [0, 3, 4]


def test_a_prompt_group_joins_its_anchor_and_the_budget_counts_computed_tokens() -> None:
    shapes = [Shape(160, "p", 150), Shape(20), Shape(158, "q", 150), *[Shape(150 + r, "p", 150) for r in (8, 12, 9)],
              Shape(155)]
    # p: 150 + 4 × 12 = 198 computed tokens for 4 × ~160 tokens of sequences
    assert select_shared_batch(shapes, anchor=0, token_budget=200, max_batch_size=8) == [0, 3, 4, 5]
    # more budget: the nearest lengths come next (q, alone in the batch, is a single of 158: 356 tokens)
    assert select_shared_batch(shapes, anchor=0, token_budget=400, max_batch_size=8) == [0, 2, 3, 4, 5]
    assert select_shared_batch(shapes, anchor=0, token_budget=1000, max_batch_size=6) == [0, 2, 3, 4, 5, 6]
    assert select_shared_batch(shapes, anchor=0, token_budget=10, max_batch_size=8) == [0]  # alone
    assert select_shared_batch(shapes, anchor=0, token_budget=1000, max_batch_size=2) == [0, 3]


async def test_requests_with_one_prompt_meet_in_one_forward() -> None:
    batches: list[list[tuple[str, int]]] = []

    def forward(batch: list[tuple[str, int]]) -> list[int]:
        batches.append(batch)
        return [n for _, n in batch]

    batcher: DynamicBatcher[tuple[str, int], int] = DynamicBatcher(
        forward, lambda p: 100 + p[1], token_budget=200, max_batch_size=64, max_wait_s=0.05, max_queue=100,
        prompt_of=lambda p: (p[0], 100))
    batcher.start()
    # eight requests for prompt a and eight for b, one sequence each, arriving interleaved
    results = await asyncio.gather(*(batcher.submit([(k, n)]) for n in range(1, 9) for k in "ab"))
    await batcher.close()
    assert [r[0] for r in results] == [n for n in range(1, 9) for _ in "ab"]
    # 100 + 8 × 8 = 164 computed tokens per prompt: each prompt's eight in one forward, never both prompts
    assert sorted(sorted(b) for b in batches) == [[("a", n) for n in range(1, 9)], [("b", n) for n in range(1, 9)]]


@pytest.mark.parametrize("packed", [True, False])
async def test_a_packed_batcher_budgets_real_tokens(packed: bool) -> None:
    batches: list[list[int]] = []

    def forward(batch: list[int]) -> list[int]:
        batches.append(batch)
        return batch

    # lengths 10, 50, 40: 100 real tokens, 150 when padded to the longest
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        forward, lambda n: n, token_budget=100, max_batch_size=64, max_wait_s=0.05, max_queue=100, packed=packed)
    batcher.start()
    assert await asyncio.gather(*(batcher.submit([n]) for n in (10, 50, 40))) == [[10], [50], [40]]
    await batcher.close()
    assert len(batches) == (1 if packed else 2)


# --- over HTTP (the session's shared service: sharing on by default) -----------------------------------


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + '{model="discriminator"}'))


def _rewards(service: ServiceProcess, items: list[dict[str, Any]]) -> list[list[float]]:
    response = httpx.post(service.url + "/token_rewards", json={"items": items}, timeout=60)
    assert response.status_code == 200, response.text
    return [r["rewards"] for r in response.json()["results"]]


def test_shared_prompts_over_http_in_one_request_and_across_requests(shared_service: ServiceProcess) -> None:
    rng = np.random.default_rng(5)
    prompt = rng.integers(2, 500, 90).tolist()
    items = [{"prompt_token_ids": prompt, "response_token_ids": rng.integers(2, 500, int(m)).tolist()}
             for m in rng.integers(1, 40, 8)]
    alone = [_rewards(shared_service, [item])[0] for item in items]  # one at a time: nothing to share
    tokens, computed = (_metric(shared_service.url, f"tlcr_batch_{k}_sum") for k in ("tokens", "padded_tokens"))
    in_one_request = _rewards(shared_service, items)
    # the prompt was computed once: fewer tokens computed than the sequences hold
    assert _metric(shared_service.url, "tlcr_batch_padded_tokens_sum") - computed < \
        _metric(shared_service.url, "tlcr_batch_tokens_sum") - tokens
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # verl's agent loop: one request per trajectory
        across = list(pool.map(lambda item: _rewards(shared_service, [item])[0], items))
    for a, b, c in zip(alone, in_one_request, across, strict=True):
        assert np.abs(np.array(a) - np.array(b)).max() <= 1e-5 and np.abs(np.array(a) - np.array(c)).max() <= 1e-5


def test_get_reward_shares_the_prompt_and_matches_one_at_a_time(shared_service: ServiceProcess) -> None:
    prompt = "".join(p.prompt for p in ControlledTask(seed=0).pairs(3, seed=9))
    responses = [p.rejected for p in ControlledTask(seed=0).pairs(6, seed=4)]

    def get_reward(n: slice) -> list[float]:
        body = {"query": [prompt + r for r in responses[n]], "prompts": [prompt] * len(responses[n])}
        response = httpx.post(shared_service.url + "/get_reward", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["rewards"]

    together = get_reward(slice(None))
    one_at_a_time = [get_reward(slice(i, i + 1))[0] for i in range(len(responses))]
    assert together == pytest.approx(one_at_a_time, abs=1e-4)
