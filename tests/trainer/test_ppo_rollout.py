"""Rollouts: sampling, index alignment of log-probs / values / rewards, request building, character offsets."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from tlcr.core.models import encode_prompt_response, load_causal_lm, load_token_classifier, load_tokenizer
from tlcr.core.tokenization import decode_with_offsets
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem, TokenRewardResult
from tlcr.trainer.ppo import PolicyAndValue, batch_indices
from tlcr.trainer.ppo_math import mask_from_lengths
from tlcr.trainer.rollout import (
    RewardContractError,
    Rollout,
    fetch_rewards,
    forward_rollout,
    generate_rollout,
    sampling_config,
)

PROMPTS = ["\n\nHuman: What is the capital of Kalo?\n\nAssistant:",
           "\n\nHuman: What are the capital and the main river of Venmar?\n\nAssistant:"]


def make_rollout(prompt_ids: list[list[int]], responses: list[list[int]], lengths: list[int], ended: list[bool],
                 pad: int) -> Rollout:
    from tlcr.core.scoring import pad_sequences

    query_ids, query_mask = pad_sequences(prompt_ids, pad, padding_side="left")
    response_ids, _ = pad_sequences(responses, pad, padding_side="right")
    length_t = torch.tensor(lengths)
    return Rollout(prompts=PROMPTS[:len(prompt_ids)], prompt_ids=prompt_ids, query_ids=query_ids,
                   query_mask=query_mask, response_ids=response_ids, lengths=length_t,
                   ended=torch.tensor(ended), mask=mask_from_lengths(length_t, response_ids.shape[1]))


def test_generate_rollout_records_eos_and_truncation(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    policy = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    prompt_ids = [encode_prompt_response(tokenizer, p, "")[0] for p in PROMPTS]
    config = sampling_config(tokenizer, max_new_tokens=6, temperature=1.0, top_p=0.9)
    torch.manual_seed(0)
    rollout = generate_rollout(policy, PROMPTS, prompt_ids, config, pad_token_id=tokenizer.pad_token_id,
                               eos_token_ids=tokenizer.eos_token_id)
    assert rollout.response_ids.shape == (2, 6)
    assert rollout.query_ids.shape[1] == max(len(p) for p in prompt_ids)
    # Left padding: each prompt ends right before its response.
    for row, ids in enumerate(prompt_ids):
        assert rollout.query_ids[row, -len(ids):].tolist() == ids
    for row in range(2):
        n = int(rollout.lengths[row])
        assert rollout.mask[row].tolist() == [True] * n + [False] * (6 - n)
        if rollout.ended[row]:
            assert rollout.response_ids[row, n - 1] == tokenizer.eos_token_id
        else:
            assert n == 6


@pytest.mark.parametrize("policy_fixture", ["tiny_model_dir", "tiny_gpt2_dir"])  # rotary and absolute positions
def test_logprobs_and_values_sit_on_the_action_that_made_each_token(policy_fixture: str,
                                                                     request: pytest.FixtureRequest) -> None:
    """Batched, left-padded forwards must equal token-by-token forwards of each sequence alone."""
    model_dir = request.getfixturevalue(policy_fixture)
    tokenizer = load_tokenizer(model_dir)
    policy = load_causal_lm(model_dir, device="cpu", dtype="float32")
    value_model = load_token_classifier(model_dir, num_labels=1, device="cpu", dtype="float32")
    wrapper = PolicyAndValue(policy, value_model).eval()
    prompt_ids = [encode_prompt_response(tokenizer, p, "")[0] for p in PROMPTS]
    eos = tokenizer.eos_token_id
    responses = [[40, 41, 42, eos], [50, 51, 52, 53, 54, 55]]  # row 0 ends with EOS, row 1 is truncated
    rollout = make_rollout(prompt_ids, responses, lengths=[4, 6], ended=[True, False], pad=tokenizer.pad_token_id)
    out = forward_rollout(wrapper, rollout, temperature=1.0, batch_size=2, with_values=True, with_entropy=True)
    assert out.values is not None and out.bootstrap_values is not None and out.entropy is not None
    with torch.no_grad():
        for row, (prompt, response) in enumerate(zip(prompt_ids, responses, strict=True)):
            for t, token in enumerate(response):
                context = torch.tensor([prompt + response[:t]])
                logits = policy(input_ids=context).logits[0, -1]
                expected_logprob = torch.log_softmax(logits, -1)[token]
                assert float(out.logprobs[row, t]) == pytest.approx(float(expected_logprob), abs=1e-4)
                expected_value = value_model(input_ids=context).logits[0, -1, 0]
                assert float(out.values[row, t]) == pytest.approx(float(expected_value), abs=1e-4)
            after_last = value_model(input_ids=torch.tensor([prompt + response])).logits[0, -1, 0]
            assert float(out.bootstrap_values[row]) == pytest.approx(float(after_last), abs=1e-4)
    assert out.logprobs[0, 4:].abs().sum() == 0  # padding after EOS carries nothing


class RecordingBackend:
    """A reward source that returns rewards 1, 2, 3, ... per token and records every request."""

    def __init__(self) -> None:
        self.token_requests: list[tuple[list[TokenRewardItem], str, float]] = []
        self.sequence_requests: list[list[SequenceRewardItem]] = []

    def token_rewards(self, items: Sequence[TokenRewardItem], mode: str = "continuous",
                      threshold: float = 0.6) -> list[TokenRewardResult]:
        self.token_requests.append((list(items), mode, threshold))
        results = []
        for item in items:
            tokens = item.response_token_ids if item.response_token_ids is not None else item.response_offsets
            n = len(tokens or [])
            results.append(TokenRewardResult(rewards=[float(i + 1) for i in range(n)]))
        return results

    def sequence_rewards(self, items: Sequence[SequenceRewardItem]) -> list[float]:
        self.sequence_requests.append(list(items))
        return [float(len(item.response)) for item in items]


def test_fetch_rewards_by_ids_aligns_dense_rewards_and_skips_eos(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    eos = tokenizer.eos_token_id
    backend = RecordingBackend()
    text_tokens = [[40, 41, 42], [50, 51, 52, 53, 54, 55], []]  # the third answered EOS at once
    fetched = fetch_rewards(backend, tokenizer, prompts=["a", "b", "c"], prompt_ids=[[1], [2], [3]],
                            text_token_ids=text_tokens, width=6, reward_mode="tlcr_negative_only",
                            token_input="ids", threshold=0.7)
    (items, mode, threshold), = backend.token_requests
    assert mode == "negative_only" and threshold == 0.7
    assert [(i.prompt_token_ids, i.response_token_ids) for i in items] == [([1], [40, 41, 42]),
                                                                         ([2], [50, 51, 52, 53, 54, 55])]
    assert fetched.dense is not None and fetched.scores is None
    # Reward k of a response lands at index k (its own action); the EOS action (index 3) gets none.
    assert fetched.dense.tolist() == [[1, 2, 3, 0, 0, 0], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]]
    assert eos not in items[0].response_token_ids


def test_fetch_rewards_text_mode_sends_offsets_of_the_policy_tokens(tiny_gpt2_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_gpt2_dir)
    _, ids = encode_prompt_response(tokenizer, "p", " The capital of Kalo is Venmar.")
    backend = RecordingBackend()
    fetched = fetch_rewards(backend, tokenizer, prompts=["p"], prompt_ids=[[0]], text_token_ids=[ids],
                            width=len(ids) + 1, reward_mode="tlcr", token_input="text", threshold=0.6)
    (items, mode, _), = backend.token_requests
    assert mode == "continuous"
    item = items[0]
    assert item.prompt == "p" and item.response == " The capital of Kalo is Venmar."
    assert item.response_offsets is not None and len(item.response_offsets) == len(ids)
    assert "".join(item.response[s:e] for s, e in item.response_offsets) == item.response
    assert fetched.dense is not None and fetched.dense[0, :len(ids)].tolist() == [float(i + 1) for i in range(len(ids))]


def test_fetch_rewards_seq_mode_scores_texts(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    _, ids = encode_prompt_response(tokenizer, "p", " The flag of Kalo is red.")
    backend = RecordingBackend()
    fetched = fetch_rewards(backend, tokenizer, prompts=["p", "q"], prompt_ids=[[0], [0]], text_token_ids=[ids, []],
                            width=len(ids), reward_mode="seq", token_input="ids", threshold=0.6)
    (items,) = backend.sequence_requests
    assert [i.response for i in items] == [" The flag of Kalo is red."]
    assert fetched.dense is None and fetched.scores is not None
    assert fetched.scores.tolist() == [float(len(" The flag of Kalo is red.")), 0.0]


def test_fetch_rewards_rejects_too_many_rewards(tiny_model_dir: Path) -> None:
    class TooMany(RecordingBackend):
        def token_rewards(self, items: Sequence[TokenRewardItem], mode: str = "continuous",
                          threshold: float = 0.6) -> list[TokenRewardResult]:
            return [TokenRewardResult(rewards=[0.0] * 10) for _ in items]

    with pytest.raises(RewardContractError, match="item 0: 10 rewards for 2 response tokens"):
        fetch_rewards(TooMany(), load_tokenizer(tiny_model_dir), prompts=["a"], prompt_ids=[[1]],
                      text_token_ids=[[5, 6]], width=3, reward_mode="tlcr", token_input="ids", threshold=0.6)
    with pytest.raises(ValueError, match="unknown reward mode 'dense'"):
        fetch_rewards(RecordingBackend(), load_tokenizer(tiny_model_dir), prompts=["a"], prompt_ids=[[1]],
                      text_token_ids=[[5]], width=1, reward_mode="dense", token_input="ids", threshold=0.6)


def test_offsets_cover_multibyte_characters(tiny_gpt2_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_gpt2_dir)
    text = " Caf\u00e9 \u4f60\u597d \U0001f600!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, spans = decode_with_offsets(tokenizer, ids)
    assert decoded == text
    assert len(spans) == len(ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    # monotone with no gap; a token holding part of a split multi-byte character overlaps the next one
    assert all(a[0] <= b[0] <= a[1] <= b[1] for a, b in itertools.pairwise(spans))
    assert decode_with_offsets(tokenizer, []) == ("", [])


def test_batch_indices_partition_each_epoch_across_processes() -> None:
    n, batch, world = 10, 3, 2
    seen = [i for step in range(5) for rank in range(world) for i in batch_indices(step, n, batch, rank, world, 7)]
    # 5 steps x 2 processes x 3 = 30 draws = 3 epochs, each a permutation of the 10 prompts.
    for epoch in range(3):
        assert sorted(seen[epoch * n:(epoch + 1) * n]) == list(range(n))
    assert batch_indices(3, n, batch, 1, world, 7) == batch_indices(3, n, batch, 1, world, 7)
    assert set(batch_indices(0, n, batch, 0, world, 7)).isdisjoint(batch_indices(0, n, batch, 1, world, 7))
