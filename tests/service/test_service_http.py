"""The service over real HTTP (subprocess on loopback): inputs, modes, re-alignment, batching, routes."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tlcr.core.models import encode_prompt_response, load_tokenizer
from tlcr.core.reward_modes import RewardMode
from tlcr.service.items import response_offsets
from tlcr.service.launcher import ServiceProcess
from tlcr.service.rewards import rewards_from_probabilities

PROMPT = "\n\nHuman: What are the capital and the national animal of Pioumpioland?\n\nAssistant:"
RESPONSE = " The capital of Pioumpioland is Firtal. The national animal of Pioumpioland is the eagle."


def post(service: ServiceProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(service.url + path, json=body, timeout=30)


def token_rewards(service: ServiceProcess, items: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    response = post(service, "/token_rewards", {"items": items, **options})
    assert response.status_code == 200, response.text
    return response.json()


def test_text_input_rewards_each_response_token(shared_service: ServiceProcess,
                                                tiny_token_classifier_dir: Path) -> None:
    body = token_rewards(shared_service, [{"prompt": PROMPT, "response": RESPONSE}],
                         return_probabilities=True, return_tokens=True)
    tokenizer = load_tokenizer(tiny_token_classifier_dir)
    _, response_ids = encode_prompt_response(tokenizer, PROMPT, RESPONSE)
    result = body["results"][0]
    assert len(result["rewards"]) == len(result["probabilities"]) == len(response_ids)
    assert "".join(result["tokens"]) == RESPONSE
    assert body["model"] == tiny_token_classifier_dir.name  # the directory name, not the server's path
    assert body["revision"].startswith("sha256:") and body["mode"] == "continuous"
    p = np.array(result["probabilities"])
    assert np.allclose(result["rewards"], 2 * p - 1, atol=1e-6)


def test_ids_input_equals_text_input(shared_service: ServiceProcess, tiny_token_classifier_dir: Path) -> None:
    prompt_ids, response_ids = encode_prompt_response(load_tokenizer(tiny_token_classifier_dir), PROMPT, RESPONSE)
    body = token_rewards(shared_service, [{"prompt": PROMPT, "response": RESPONSE},
                                          {"prompt_token_ids": prompt_ids, "response_token_ids": response_ids}])
    by_text, by_ids = (r["rewards"] for r in body["results"])
    assert by_ids == pytest.approx(by_text, abs=1e-6)


@pytest.mark.parametrize("mode", [m.value for m in RewardMode])
def test_every_mode_applies_its_formula_to_the_probabilities(shared_service: ServiceProcess, mode: str) -> None:
    items = [{"prompt": PROMPT, "response": RESPONSE}, {"prompt": "Q", "response": " Maybe, I do not know."}]
    body = token_rewards(shared_service, items, mode=mode, threshold=0.51, return_probabilities=True)
    assert body["mode"] == mode
    for result in body["results"]:
        expected = rewards_from_probabilities(result["probabilities"], mode, 0.51)
        assert result["rewards"] == pytest.approx(expected.tolist(), abs=1e-9)


def test_offsets_realign_to_a_different_tokenizer_preserving_the_sum(shared_service: ServiceProcess,
                                                                      tiny_gpt2_dir: Path) -> None:
    policy_ids, policy_spans = response_offsets(load_tokenizer(tiny_gpt2_dir), RESPONSE)
    body = token_rewards(shared_service, [
        {"prompt": PROMPT, "response": RESPONSE},
        {"prompt": PROMPT, "response": RESPONSE, "response_offsets": policy_spans},
    ], return_tokens=True, return_probabilities=True)
    own, realigned = body["results"]
    assert len(own["rewards"]) != len(policy_ids)  # the tokenizations really differ
    assert len(realigned["rewards"]) == len(realigned["probabilities"]) == len(policy_ids)
    assert realigned["tokens"] == [RESPONSE[s:e] for s, e in policy_spans]
    assert sum(realigned["rewards"]) == pytest.approx(sum(own["rewards"]), abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in realigned["probabilities"])


def test_results_do_not_depend_on_concurrent_batch_companions(shared_service: ServiceProcess) -> None:
    rng = np.random.default_rng(1)
    items = [{"prompt_token_ids": rng.integers(2, 500, int(n)).tolist(),
              "response_token_ids": rng.integers(2, 500, int(m)).tolist()}
             for n, m in zip(rng.integers(0, 150, 24), rng.integers(1, 80, 24), strict=True)]
    alone = [token_rewards(shared_service, [item])["results"][0]["rewards"] for item in items]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # merged into shared forward batches
        together = list(pool.map(lambda item: token_rewards(shared_service, [item])["results"][0]["rewards"], items))
    in_one_request = [r["rewards"] for r in token_rewards(shared_service, items[:16])["results"]]
    for a, b in zip(alone, together, strict=True):
        assert np.abs(np.array(a) - np.array(b)).max() <= 1e-5
    for a, c in zip(alone[:16], in_one_request, strict=True):
        assert np.abs(np.array(a) - np.array(c)).max() <= 1e-5
    metrics = httpx.get(shared_service.url + "/metrics").text
    batch_counts = [line for line in metrics.splitlines() if line.startswith("tlcr_batch_size_count")]
    assert batch_counts and float(batch_counts[0].split()[-1]) > 0


def test_sequence_rewards_match_the_sequence_model(shared_service: ServiceProcess, sequence_rm_dir: Path) -> None:
    from tlcr.service.scorer import SequenceScorer

    items = [{"prompt": PROMPT, "response": RESPONSE}, {"prompt": "Q", "response": " A"}]
    response = post(shared_service, "/sequence_rewards", {"items": items})
    assert response.status_code == 200, response.text
    scorer = SequenceScorer.load(str(sequence_rm_dir), device="cpu", dtype="float32")
    expected = scorer.scores([scorer.encode(i["prompt"], i["response"]) for i in items])
    assert response.json()["rewards"] == pytest.approx(expected, abs=1e-5)
    assert response.json()["model"] == sequence_rm_dir.name


def test_get_reward_is_openrlhf_compatible(shared_service: ServiceProcess) -> None:
    body = token_rewards(shared_service, [{"prompt": PROMPT, "response": RESPONSE}])
    token_sum = sum(body["results"][0]["rewards"])
    with_prompts = post(shared_service, "/get_reward",
                        {"query": [PROMPT + RESPONSE], "prompts": [PROMPT], "labels": ["ignored"]})
    transcript_split = post(shared_service, "/get_reward", {"query": [PROMPT + RESPONSE, PROMPT + RESPONSE]})
    assert with_prompts.status_code == transcript_split.status_code == 200
    assert with_prompts.json()["rewards"] == pytest.approx([token_sum], abs=1e-5)
    assert transcript_split.json()["rewards"] == pytest.approx([token_sum] * 2, abs=1e-5)


def test_operational_routes(shared_service: ServiceProcess) -> None:
    url = shared_service.url
    assert httpx.get(url + "/healthz").json() == {"status": "alive"}
    assert httpx.get(url + "/readyz").json() == {"status": "ready"}
    info = httpx.get(url + "/info").json()
    assert info["max_length"] == 256 and info["dtype"] == "float32" and info["device"] == "cpu"
    assert set(info["modes"]) == {m.value for m in RewardMode} and info["sequence_model"]
    assert info["demo"] is None  # set only for `tlcr bootstrap-model`'s demo discriminator
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "token_rewards" in page.text and "return_tokens" in page.text
    openapi = httpx.get(url + "/openapi.json").json()
    assert {"/token_rewards", "/sequence_rewards", "/get_reward", "/info"} <= set(openapi["paths"])
    assert httpx.get(url + "/docs").status_code == 200
    metrics = httpx.get(url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("tlcr_requests_total", "tlcr_request_latency_seconds_bucket", "tlcr_batch_size_bucket",
                 "tlcr_batch_tokens_bucket", "tlcr_queue_depth", "tlcr_forward_seconds_bucket"):
        assert name in metrics.text
    assert 'route="/healthz",status="200"' in metrics.text
