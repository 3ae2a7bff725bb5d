"""Bad input over real HTTP: each case is a 4xx whose message names the problem; the server stays healthy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tlcr.service.launcher import ServiceProcess

GOOD = {"prompt": "\n\nHuman: Hi\n\nAssistant:", "response": " Hello."}
JSON = {"Content-Type": "application/json"}

# (name, path, body: JSON-able object or raw bytes, expected status, substrings the message must contain)
CASES: list[tuple[str, str, Any, int, list[str]]] = [
    ("malformed JSON", "/token_rewards", b'{"items": [{"prompt": "a",', 422, ["not valid JSON"]),
    ("not an object", "/token_rewards", b"[1, 2]", 422, ["body", "valid dictionary"]),
    ("items missing", "/token_rewards", {}, 422, ["items: Field required"]),
    ("items empty", "/token_rewards", {"items": []}, 422, ["items", "at least 1"]),
    ("wrong type", "/token_rewards", {"items": [{"prompt": 3, "response": ["x"]}]}, 422,
     ["items[0].prompt", "valid string", "items[0].response"]),
    ("empty response", "/token_rewards", {"items": [GOOD, {"prompt": "a", "response": ""}]}, 422,
     ["items[1]", "response is empty"]),
    ("empty response ids", "/token_rewards", {"items": [{"prompt_token_ids": [1], "response_token_ids": []}]},
     422, ["items[0]", "response_token_ids is empty"]),
    ("response id out of range", "/token_rewards",
     {"items": [GOOD, {"prompt_token_ids": [1, 2], "response_token_ids": [5, 6, 512]}]}, 422,
     ["items[1].response_token_ids[2]", "512", "[0, 512)"]),
    ("negative prompt id", "/token_rewards",
     {"items": [{"prompt_token_ids": [4, -1], "response_token_ids": [5]}]}, 422,
     ["items[0].prompt_token_ids[1]", "-1"]),
    ("too many items", "/token_rewards", {"items": [GOOD] * 17}, 422, ["17 items", "limit of 16"]),
    ("too long", "/token_rewards",
     {"items": [GOOD, {"prompt_token_ids": [7] * 250, "response_token_ids": [8] * 10}]}, 422,
     ["items[1]", "260 tokens", "max_length of 256", "--truncation prompt_left"]),
    ("text and ids together", "/token_rewards",
     {"items": [{"prompt": "a", "response": "b", "prompt_token_ids": [1], "response_token_ids": [2]}]}, 422,
     ["items[0]", "not both"]),
    ("offsets outside the response", "/token_rewards",
     {"items": [{"prompt": "a", "response": " Hello.", "response_offsets": [[0, 3], [3, 99]]}]}, 422,
     ["response_offsets[1]", "[3, 99)", "7-character response"]),
    ("unknown field", "/token_rewards", {"items": [GOOD], "temperature": 1}, 422,
     ["temperature", "Extra inputs are not permitted"]),
    ("unknown mode", "/token_rewards", {"items": [GOOD], "mode": "sigmoid"}, 422, ["mode", "continuous"]),
    ("threshold out of range", "/token_rewards", {"items": [GOOD], "mode": "fixed", "threshold": 0.3}, 422,
     ["threshold", "greater than 0.5"]),
    ("get_reward without a response marker", "/get_reward", {"query": ["just some text"]}, 422,
     ["query[0]", "Assistant", "prompts"]),
    ("get_reward prompt mismatch", "/get_reward", {"query": ["abc"], "prompts": ["xyz"]}, 422,
     ["query[0]", "does not start with prompts[0]"]),
    ("get_reward count mismatch", "/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, 422,
     ["1 prompts for 2 queries"]),
    ("sequence empty response", "/sequence_rewards", {"items": [{"prompt": "a", "response": ""}]}, 422,
     ["items[0].response", "at least 1 character"]),
    ("oversized body", "/token_rewards", {"items": [{"prompt": "x" * 250_000, "response": "y"}]}, 413,
     ["exceeds the limit of 200000 bytes"]),
]


@pytest.fixture(scope="module")
def http(shared_service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_service.url, timeout=30) as client:
        yield client


def _send(http: httpx.Client, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return http.post(path, content=content, headers=kwargs.pop("headers", JSON), **kwargs)


@pytest.mark.parametrize(("name", "path", "body", "status", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_4xx_naming_the_problem(http: httpx.Client, name: str, path: str, body: Any,
                                                 status: int, expected: list[str]) -> None:
    response = _send(http, path, body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for fragment in expected:
        assert fragment in detail, f"{name}: {fragment!r} not in {detail!r}"


def test_streamed_oversized_body_is_refused(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"items": [{"prompt": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'", "response": "y"}]}'

    response = http.post("/token_rewards", content=chunks(), headers=JSON)  # chunked: no Content-Length
    assert response.status_code == 413
    assert "exceeds the limit of 200000 bytes" in response.json()["detail"]


def test_body_without_json_content_type_is_explained(http: httpx.Client) -> None:
    response = http.post("/token_rewards", content=b'{"items": []}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["detail"]


def test_wrong_method_and_unknown_route(http: httpx.Client) -> None:
    assert http.get("/token_rewards").status_code == 405
    assert http.post("/tokens", json={}).status_code == 404


def test_server_is_healthy_after_the_bad_input_suite(http: httpx.Client) -> None:
    for _, path, body, _, _ in CASES:  # the whole suite again, then normal service
        assert 400 <= _send(http, path, body).status_code < 500
    assert http.get("/readyz").status_code == 200
    response = http.post("/token_rewards", json={"items": [GOOD]})
    assert response.status_code == 200 and len(response.json()["results"]) == 1
    metrics = http.get("/metrics").text
    assert 'tlcr_errors_total{kind="validation"}' in metrics
