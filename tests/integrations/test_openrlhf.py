"""OpenRLHF: /get_reward's `rewards`, `scores`, `extra_logs` and special-token stripping, and the reward_func
file, both driven by OpenRLHF's own SingleTurnAgentExecutor (generation stubbed) where OpenRLHF is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import tlcr.integrations.openrlhf as openrlhf_reward
from tests.integrations.conftest import engine
from tlcr.core.tokens import SUMMARY_KEYS
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess, start_service
from tlcr.service.schemas import TokenRewardItem

PROMPT = "\n\nHuman: Where does Bob live?\n\nAssistant:"
RESPONSE = " Bob lives in Paris."
SUFFIX = "<|im_end|>\n<|endoftext|>"  # how a chat policy's decoded sample ends (Qwen2's markers)


@pytest.fixture(scope="module")
def qwen2(tiny_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy tokenizer (the tiny GPT-2's, another vocabulary than the discriminator's) with Qwen2's
    chat-template end marker and EOS as special tokens."""
    from tlcr.core.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_gpt2_dir)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "additional_special_tokens": ["<|im_end|>"]})
    out = tmp_path_factory.mktemp("policy-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def stripping_service(tiny_token_classifier_dir: Path, qwen2: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("logs") / "stripping-service.log"
    with start_service(tiny_token_classifier_dir, log_path=log,
                       extra_args=["--torch-threads", "1", "--max-wait-ms", "2",
                                   "--get-reward-policy-tokenizer", str(qwen2)]) as service:
        yield service


def expected(url: str, response: str = RESPONSE) -> tuple[float, float]:
    """(Σ token rewards, mean token probability) of PROMPT + `response` from /token_rewards."""
    with TokenRewardClient(url) as client:
        [result] = client.token_rewards([TokenRewardItem(prompt=PROMPT, response=response)],
                                        return_probabilities=True)
    assert result.probabilities is not None
    return sum(result.rewards), sum(result.probabilities) / len(result.probabilities)


def test_get_reward_answers_rewards_scores_and_token_statistics(tiny_reward_service: ServiceProcess) -> None:
    reward, score = expected(tiny_reward_service.url)
    body = httpx.post(tiny_reward_service.url + "/get_reward",
                      json={"query": [PROMPT + RESPONSE], "prompts": [PROMPT], "labels": [""]}).json()
    assert body["rewards"] == pytest.approx([reward], abs=1e-5)
    assert body["scores"] == pytest.approx([score], abs=1e-5) and 0.0 <= body["scores"][0] <= 1.0
    logs = body["extra_logs"]
    assert set(logs) == set(SUMMARY_KEYS) and all(len(v) == 1 for v in logs.values())
    assert logs["tlcr/reward_min"][0] <= logs["tlcr/reward_mean"][0] <= logs["tlcr/reward_max"][0]
    assert logs["tlcr/reward_sum"] == pytest.approx([reward], abs=1e-5)


def test_the_discriminators_own_special_tokens_are_stripped_by_default(tiny_reward_service: ServiceProcess) -> None:
    """The tiny discriminator's tokenizer has `<|endoftext|>` (EOS) and `<|pad|>`: a query ending with them is scored
    as the bare response; `<|im_end|>`, a special token of no tokenizer the service knows here, stays text."""
    reward, _ = expected(tiny_reward_service.url)
    url = tiny_reward_service.url + "/get_reward"
    for suffix in ("<|endoftext|>", "<|endoftext|>\n", "<|pad|><|endoftext|>"):
        body = httpx.post(url, json={"query": [PROMPT + RESPONSE + suffix], "prompts": [PROMPT]}).json()
        assert body["rewards"][0] == pytest.approx(reward, abs=1e-5), suffix
    kept = httpx.post(url, json={"query": [PROMPT + RESPONSE + "<|im_end|>"], "prompts": [PROMPT]}).json()
    assert kept["rewards"][0] == pytest.approx(expected(tiny_reward_service.url, RESPONSE + "<|im_end|>")[0],
                                               abs=1e-5)
    assert abs(kept["rewards"][0] - reward) > 1e-3  # what stripping removes, for a token it does not know
    inside = httpx.post(url, json={"query": [PROMPT + " Bob<|endoftext|> lives in Paris."], "prompts": [PROMPT]})
    assert inside.json()["rewards"][0] == pytest.approx(
        expected(tiny_reward_service.url, " Bob<|endoftext|> lives in Paris.")[0], abs=1e-5)  # only the end is cut
    only_eos = httpx.post(url, json={"query": [PROMPT + "<|endoftext|>"], "prompts": [PROMPT]})
    assert only_eos.status_code == 422 and "empty response" in only_eos.text


def test_the_policy_tokenizer_adds_its_special_tokens(tiny_reward_service: ServiceProcess,
                                                      stripping_service: ServiceProcess) -> None:
    reward, _ = expected(tiny_reward_service.url)
    query = {"query": [PROMPT + RESPONSE + SUFFIX], "prompts": [PROMPT]}
    stripped = httpx.post(stripping_service.url + "/get_reward", json=query).json()["rewards"][0]
    by_default = httpx.post(tiny_reward_service.url + "/get_reward", json=query).json()["rewards"][0]
    assert stripped == pytest.approx(reward, abs=1e-5)
    # Without the policy's tokenizer only the trailing <|endoftext|> (the discriminator's own EOS) goes.
    assert by_default == pytest.approx(expected(tiny_reward_service.url, RESPONSE + "<|im_end|>\n")[0], abs=1e-5)
    assert abs(by_default - reward) > 1e-3  # the effect the option removes
    with_own_pad = httpx.post(stripping_service.url + "/get_reward",
                              json={"query": [PROMPT + RESPONSE + "<|im_end|><|pad|>"], "prompts": [PROMPT]})
    assert with_own_pad.json()["rewards"][0] == pytest.approx(reward, abs=1e-5)  # both sets, in any order
    only_specials = httpx.post(stripping_service.url + "/get_reward",
                               json={"query": [PROMPT + SUFFIX], "prompts": [PROMPT]})
    assert only_specials.status_code == 422 and "empty response" in only_specials.text


@pytest.fixture
def reward_env(monkeypatch: pytest.MonkeyPatch, tiny_reward_service: ServiceProcess, qwen2: Path) -> Iterator[None]:
    monkeypatch.setenv("TLCR_REWARD_URL", tiny_reward_service.url)
    monkeypatch.setenv("TLCR_POLICY_TOKENIZER", str(qwen2))
    openrlhf_reward._setup.cache_clear()
    yield
    openrlhf_reward._setup.cache_clear()


def test_reward_func_file_matches_get_reward(reward_env: None, tiny_reward_service: ServiceProcess) -> None:
    reward, score = expected(tiny_reward_service.url)
    out = openrlhf_reward.reward_func([PROMPT + RESPONSE + SUFFIX, PROMPT + SUFFIX], [PROMPT, PROMPT], ["", ""])
    assert out["rewards"].tolist() == pytest.approx([reward, 0.0], abs=1e-5)
    assert out["scores"].tolist() == pytest.approx([score, 0.5], abs=1e-5)
    assert set(out["extra_logs"]) == set(SUMMARY_KEYS)
    with pytest.raises(ValueError, match="does not start with its prompt"):
        openrlhf_reward.reward_func(["something else"], [PROMPT], [""])


def test_reward_func_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TLCR_REWARD_URL", raising=False)
    openrlhf_reward._setup.cache_clear()
    with pytest.raises(RuntimeError, match="TLCR_REWARD_URL"):
        openrlhf_reward.reward_func([PROMPT + RESPONSE], [PROMPT], [""])
    openrlhf_reward._setup.cache_clear()


class StubEngine:
    """Stands in for OpenRLHF's vLLM engine only: `generate` returns fixed token ids (the policy's sample)."""

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids

    async def generate(self, prompt_token_ids: list[int], sampling_params: object, **kwargs: object) -> object:
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=self.token_ids, finish_reason="stop",
                                                        logprobs=None)])


def run_executor(remote: str, qwen2: Path) -> dict:
    agent = engine("openrlhf.utils.agent")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen2))
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=remote)  # type: ignore[attr-defined]
    sample = tokenizer(RESPONSE + "<|im_end|>", add_special_tokens=False)["input_ids"]
    params = SimpleNamespace(max_tokens=16, logprobs=None)
    return asyncio.run(executor.execute(PROMPT, "", params, 256, tokenizer, StubEngine(sample)))


def test_openrlhf_executor_with_the_reward_func_file(reward_env: None, tiny_reward_service: ServiceProcess,
                                                     qwen2: Path) -> None:
    out = run_executor(openrlhf_reward.__file__, qwen2)
    reward, score = expected(tiny_reward_service.url)
    assert float(out["reward"][0]) == pytest.approx(reward, abs=1e-5)
    assert float(out["scores"][0]) == pytest.approx(score, abs=1e-5)
    assert set(out["extra_logs"]) == set(SUMMARY_KEYS)


def test_openrlhf_executor_over_http(tiny_reward_service: ServiceProcess, stripping_service: ServiceProcess,
                                     qwen2: Path) -> None:
    out = run_executor(stripping_service.url + "/get_reward", qwen2)
    reward, score = expected(tiny_reward_service.url)
    assert out["reward"] == pytest.approx([reward], abs=1e-5)
    assert out["scores"] == pytest.approx([score], abs=1e-5)
    assert out["extra_logs"]["tlcr/response_tokens"][0] > 0
