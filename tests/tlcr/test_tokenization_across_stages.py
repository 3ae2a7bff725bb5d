"""One tokenization convention from labels to PPO, with each real tokenizer on real HH-RLHF text: the response
ids labels are computed on are the ids the discriminator trains on, the ids the service scores (from ids
or from text), and the ids a policy sharing the tokenizer generated after the prompt."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from tlcr.core.data.labelled import parse_labelled_record
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.scoring import pad_sequences
from tlcr.labeling.records import build_labelled_record
from tlcr.service.items import Limits, prepare_token_item
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem, TokenRewardResult
from tlcr.trainer.discriminator import build_training_examples, check_tokenization
from tlcr.trainer.ppo_math import mask_from_lengths
from tlcr.trainer.rollout import Rollout, fetch_rewards


class RequestRecorder:
    """Keeps the items PPO would send; answers one reward per response token (ids) or per span (text)."""

    def __init__(self) -> None:
        self.items: list[TokenRewardItem] = []

    def token_rewards(self, items: Sequence[TokenRewardItem], mode: str = "continuous",
                      threshold: float = 0.6) -> list[TokenRewardResult]:
        self.items += items
        return [TokenRewardResult(rewards=[0.5] * len(i.response_token_ids or i.response_offsets or []))
                for i in items]

    def sequence_rewards(self, items: Sequence[SequenceRewardItem]) -> list[float]:
        raise AssertionError("not used")


def generated_rollout(tok: PreTrainedTokenizerBase, prompt: str, response_ids: list[int]) -> Rollout:
    """A rollout in which the policy generated exactly `response_ids`, then EOS, after the prompt's ids."""
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]  # what PPO conditions the policy on
    generated = [*response_ids, tok.eos_token_id]
    query_ids, query_mask = pad_sequences([prompt_ids], tok.pad_token_id, padding_side="left")
    lengths = torch.tensor([len(generated)])
    return Rollout(prompts=[prompt], prompt_ids=[prompt_ids], query_ids=query_ids, query_mask=query_mask,
                   response_ids=torch.tensor([generated]), lengths=lengths, ended=torch.tensor([True]),
                   mask=mask_from_lengths(lengths, len(generated)))


def test_labels_discriminator_service_and_policy_see_the_same_response_ids(
        named_tokenizer: tuple[str, PreTrainedTokenizerBase], hh_pairs: list[PreferencePair]) -> None:
    name, tok = named_tokenizer
    limits = Limits(vocab_size=len(tok), max_length=100_000)
    for pair in hh_pairs[:20]:
        # labeling: token ids and labels of the rejected response (revision := chosen)
        raw = build_labelled_record(pair, pair.chosen, tok, reviser="chosen", instruction_version="v1",
                                    tokenizer_name=name)
        record = parse_labelled_record(raw, "record", len(tok))
        assert record is not None
        ids = record.rejected_token_ids
        joint = tok(pair.prompt + pair.rejected, add_special_tokens=False)["input_ids"]
        # discriminator training: accepts the record's ids and trains on exactly the joint encoding
        check_tokenization([record], tok, name)
        example = build_training_examples([record], tok, max_length=100_000)[0]
        assert example["input_ids"] == joint
        prompt_length = len(joint) - len(ids)
        assert example["labels"][prompt_length:] == record.rejected_labels
        assert set(example["labels"][:prompt_length]) == {-100.0}
        # service, text input: scores the same ids
        prepared = prepare_token_item(0, TokenRewardItem(prompt=pair.prompt, response=pair.rejected), tok, limits)
        assert prepared.encoded.response_ids == ids and prepared.encoded.prompt_ids == joint[:prompt_length]
        # PPO with the same tokenizer: the policy generated these ids (+ EOS) after the prompt's own ids
        rollout = generated_rollout(tok, pair.prompt, ids)
        assert rollout.prompt_ids[0] + ids == joint  # no spurious token at the prompt/response boundary
        assert rollout.text_token_ids() == [ids]
        for token_input in ("ids", "text"):
            backend = RequestRecorder()
            fetched = fetch_rewards(backend, tok, prompts=rollout.prompts, prompt_ids=rollout.prompt_ids,
                                    text_token_ids=rollout.text_token_ids(), width=len(ids) + 1,
                                    reward_mode="tlcr", token_input=token_input, threshold=0.6)
            (item,) = backend.items
            assert fetched.dense is not None and fetched.dense.shape == (1, len(ids) + 1)
            assert fetched.dense[0, -1] == 0  # the EOS action
            if token_input == "ids":
                assert item.response_token_ids == ids
                continue
            assert item.response == pair.rejected and item.prompt == pair.prompt
            # the service scores the text as the same ids, and the policy's offsets map them one to one
            prepared = prepare_token_item(0, item, tok, limits)
            assert prepared.encoded.response_ids == ids and prepared.alignment is not None
            spans = item.response_offsets or []
            values = np.arange(len(ids), dtype=np.float64)
            realigned = prepared.alignment.sum(values)
            assert realigned.sum() == pytest.approx(values.sum())
            # one to one, except tokens sharing a character (a split "’" or emoji) share their rewards
            alone = [i for i, (a, b) in enumerate(spans)
                     if not any(j != i and c < b and a < d for j, (c, d) in enumerate(spans))]
            assert len(alone) > len(spans) // 2
            assert realigned[alone] == pytest.approx(values[alone])

