"""PPO whose policy uses a real Qwen2 (or GPT-2) tokenizer against a reward service whose discriminator uses
the real Llama 2 tokenizer: a real service on loopback, the real HTTP client, text + character offsets.

Models are tiny (hidden 16, one layer) on the tokenizers' whole vocabularies, built from config like a real
checkpoint. Every step checks one reward per generated token (the EOS action's reward is 0 explicitly)
and that the rewards re-aligned to the policy's tokens sum to the discriminator's own sum.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess, start_service
from tlcr.service.schemas import TokenRewardItem, TokenRewardResult
from tlcr.trainer.ppo import PPOTrainer
from tlcr.trainer.ppo_config import PPOConfig
from tlcr.trainer.rollout import FetchedRewards


@pytest.fixture(scope="module")
def llama2_service(tiny_real_discriminator_dir: Callable[[str], Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("cross-tokenizer-service") / "service.log"
    with start_service(tiny_real_discriminator_dir("llama2"), log_path=log,
                       extra_args=["--torch-threads", "1", "--max-wait-ms", "2"]) as running:
        yield running


class RecordingClient:
    """The real HTTP client; keeps each /token_rewards call's items and results for the checks."""

    def __init__(self, url: str) -> None:
        self.client = TokenRewardClient(url, timeout=60.0)
        self.calls: list[tuple[list[TokenRewardItem], list[TokenRewardResult]]] = []

    def info(self) -> Any:
        return self.client.info()

    def token_rewards(self, items: Sequence[TokenRewardItem], mode: str = "continuous",
                      threshold: float = 0.6) -> list[TokenRewardResult]:
        results = self.client.token_rewards(items, mode=mode, threshold=threshold)
        self.calls.append((list(items), results))
        return results

    def sequence_rewards(self, items: Sequence[Any]) -> list[float]:
        return self.client.sequence_rewards(items)


class RecordingPPOTrainer(PPOTrainer):
    """Keeps each step's rollout and the rewards placed on its actions."""

    steps: list[tuple[Any, FetchedRewards]]

    def _advantages(self, collected: Any, rewards: FetchedRewards) -> Any:
        self.steps.append((collected.rollout, rewards))
        return super()._advantages(collected, rewards)


@pytest.mark.parametrize("policy_name", ["qwen2", "gpt2"])
def test_policy_with_a_real_tokenizer_other_than_the_discriminators(
        policy_name: str, llama2_service: ServiceProcess, tiny_real_model_dir: Callable[[str], Path],
        tmp_path: Path) -> None:
    policy = tiny_real_model_dir(policy_name)
    backend = RecordingClient(llama2_service.url)
    config = PPOConfig(policy=str(policy), output_dir=str(tmp_path / "run"), reward_url=llama2_service.url,
                       value_init="sft", num_steps=2, rollout_batch_size=4, mini_batch_size=2, micro_batch_size=2,
                       forward_batch_size=4, ppo_epochs=1, max_new_tokens=12, learning_rate=1e-3, data_limit=40,
                       save_steps=2, report_to="none", reward_deadline=60.0, device="cpu")
    trainer = RecordingPPOTrainer(config, reward_backend=backend)
    trainer.steps = []
    eos_ids = set(trainer.eos_token_ids)
    try:
        trainer.train()
        assert json.loads((tmp_path / "run" / "ppo_config.json").read_text())["token_input_resolved"] == "text"
        assert len(trainer.steps) == 2 and len(backend.calls) == 2
        tokenizer = trainer.tokenizer
        policy_tokens = discriminator_tokens = 0
        for (rollout, fetched), (items, results) in zip(trainer.steps, backend.calls, strict=True):
            assert fetched.dense is not None and fetched.cut_short == 0
            text_ids = rollout.text_token_ids()
            sent_rows = [i for i, ids in enumerate(text_ids) if ids]
            assert len(sent_rows) == len(items)  # a random tiny policy always says something in 12 tokens
            for row, item, result in zip(sent_rows, items, results, strict=True):
                generated = int(rollout.lengths[row])
                ids = rollout.response_ids[row, :generated].tolist()
                if bool(rollout.ended[row]):  # the EOS action: no text, explicitly no reward
                    assert ids[-1] in eos_ids and text_ids[row] == ids[:-1]
                    assert float(fetched.dense[row, generated - 1]) == 0.0
                else:
                    assert text_ids[row] == ids
                assert not eos_ids & set(text_ids[row])
                # one reward per generated text token; nothing past the response
                assert item.response_offsets is not None and len(item.response_offsets) == len(text_ids[row])
                assert len(result.rewards) == len(text_ids[row])
                assert fetched.dense[row, :len(result.rewards)].tolist() == pytest.approx(result.rewards, abs=1e-6)
                assert not fetched.dense[row, generated:].any()
                assert int(rollout.mask[row].sum()) == generated
                # byte-level BPE: the text is the tokens' bytes, whatever the prompt
                assert item.response == tokenizer.decode(text_ids[row], skip_special_tokens=True,
                                                         clean_up_tokenization_spaces=False)
                # the same text scored on the discriminator's own tokens: the same total reward
                own = backend.client.token_rewards([TokenRewardItem(prompt=item.prompt, response=item.response)])[0]
                assert sum(result.rewards) == pytest.approx(sum(own.rewards), abs=1e-4)
                policy_tokens += len(result.rewards)
                discriminator_tokens += len(own.rewards)
        assert policy_tokens != discriminator_tokens  # the two tokenizations really differ
    finally:
        backend.client.close()


def test_eos_is_explicit_one_reward_per_generated_token(llama2_service: ServiceProcess,
                                                        real_tokenizer_dir: Callable[[str], Path]) -> None:
    """Qwen2 policy tokens (emoji, CJK, combining marks) ending with and without EOS, scored over HTTP."""

    from tlcr.core.models import load_tokenizer
    from tlcr.core.scoring import pad_sequences
    from tlcr.core.tokenization import encode_prompt_response
    from tlcr.trainer.ppo_math import mask_from_lengths, response_lengths
    from tlcr.trainer.rollout import Rollout, fetch_rewards

    tok = load_tokenizer(real_tokenizer_dir("qwen2"), padding_side="left")
    prompt = "\n\nHuman: Greet me in three scripts.\n\nAssistant:"
    prompt_ids, first = encode_prompt_response(tok, prompt, " 你好 😶\u200d🌫\ufe0f cafe\u0301!")
    _, second = encode_prompt_response(tok, prompt, " Hello there, and good morning to you, my friend!")
    # the first ended with EOS, the second was cut at the length limit (the widest row, as in generation:
    # Qwen2 pads with its EOS id, so only rows that ended are padded)
    responses = [[*first, tok.eos_token_id], second]
    assert len(second) > len(first) + 1
    query_ids, query_mask = pad_sequences([prompt_ids, prompt_ids], tok.pad_token_id, padding_side="left")
    response_ids, _ = pad_sequences(responses, tok.pad_token_id, padding_side="right")
    lengths, ended = response_lengths(response_ids, [tok.eos_token_id])
    assert lengths.tolist() == [len(first) + 1, len(second)] and ended.tolist() == [True, False]
    rollout = Rollout(prompts=[prompt, prompt], prompt_ids=[prompt_ids, prompt_ids], query_ids=query_ids,
                      query_mask=query_mask, response_ids=response_ids, lengths=lengths, ended=ended,
                      mask=mask_from_lengths(lengths, response_ids.shape[1]))
    backend = RecordingClient(llama2_service.url)
    try:
        fetched = fetch_rewards(backend, tok, prompts=rollout.prompts, prompt_ids=rollout.prompt_ids,
                                text_token_ids=rollout.text_token_ids(), width=response_ids.shape[1],
                                reward_mode="tlcr", token_input="text", threshold=0.6)
        (items, results), = backend.calls
        assert fetched.dense is not None
        assert [item.response for item in items] == [" 你好 😶\u200d🌫\ufe0f café!",  # Qwen2 normalizes to NFC
                                                     " Hello there, and good morning to you, my friend!"]
        rewards = [fetched.dense[row, :int(n)].tolist() for row, n in enumerate(lengths)]
        assert [len(r) for r in rewards] == lengths.tolist()  # one reward per generated token
        assert rewards[0][-1] == 0.0  # the EOS action: no text to score
        own_counts = []
        for row, (item, result) in enumerate(zip(items, results, strict=True)):
            own = backend.client.token_rewards([TokenRewardItem(prompt=item.prompt, response=item.response)])[0]
            assert sum(rewards[row]) == pytest.approx(sum(own.rewards), abs=1e-5)
            assert len(result.rewards) == len(rollout.text_token_ids()[row])
            own_counts.append(len(own.rewards))
        assert own_counts[0] != len(first)  # Llama 2 splits the emoji and CJK differently (byte fallback)
    finally:
        backend.client.close()
