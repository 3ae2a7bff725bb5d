"""Limits and access over real HTTP (the service app under uvicorn in a thread): API key, overload → 503 +
Retry-After, request timeout, opt-in truncation, readiness when the model cannot load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

GOOD = {"prompt": "\n\nHuman: Hi\n\nAssistant:", "response": " Hello."}


def test_api_key_guards_inference_but_not_health(in_process_service: Callable[..., Any]) -> None:
    server = in_process_service(api_key="s3cret")
    url = server.url
    for path, body in [("/token_rewards", {"items": [GOOD]}), ("/get_reward", {"query": ["a"], "prompts": [""]}),
                       ("/sequence_rewards", {"items": [GOOD]})]:
        missing = httpx.post(url + path, json=body)
        wrong = httpx.post(url + path, json=body, headers={"Authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert "missing API key" in missing.json()["detail"] and wrong.json()["detail"] == "invalid API key"
        assert missing.headers["WWW-Authenticate"] == "Bearer"
    ok = httpx.post(url + "/token_rewards", json={"items": [GOOD]}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    for path in ("/healthz", "/readyz", "/metrics", "/info", "/"):
        assert httpx.get(url + path).status_code == 200, path
    assert 'tlcr_errors_total{kind="auth"} 6.0' in httpx.get(url + "/metrics").text


def test_full_queue_answers_503_with_retry_after(in_process_service: Callable[..., Any]) -> None:
    # The first request's 8 sequences fill the queue and wait up to 2 s for companions.
    server = in_process_service(max_queue_items=8, max_items_per_request=8, max_wait_ms=2000, adaptive_wait=False,
                                retry_after_s=2)
    first: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: first.setdefault(
        "response", httpx.post(server.url + "/token_rewards", json={"items": [GOOD] * 8}, timeout=30)))
    thread.start()
    deadline = time.monotonic() + 10
    while 'tlcr_queue_depth{model="discriminator"} 8.0' not in httpx.get(server.url + "/metrics").text:
        assert time.monotonic() < deadline, "the first request never reached the queue"
        time.sleep(0.01)
    started = time.monotonic()
    refused = httpx.post(server.url + "/token_rewards", json={"items": [GOOD]}, timeout=30)
    assert time.monotonic() - started < 1.0  # refused at once, not after the queue drained
    thread.join()
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    assert "queue limit of 8" in refused.json()["detail"]
    assert first["response"].status_code == 200
    assert httpx.post(server.url + "/token_rewards", json={"items": [GOOD]}).status_code == 200
    assert 'tlcr_errors_total{kind="overload"} 1.0' in httpx.get(server.url + "/metrics").text


def test_request_that_waits_too_long_gets_503_not_a_hang(in_process_service: Callable[..., Any]) -> None:
    server = in_process_service(max_wait_ms=2000, adaptive_wait=False, request_timeout_s=0.2)
    started = time.monotonic()
    response = httpx.post(server.url + "/token_rewards", json={"items": [GOOD]}, timeout=30)
    assert time.monotonic() - started < 1.5
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert "no result within 0.2 s" in response.json()["detail"]


def test_opt_in_truncation_drops_the_prompt_start(in_process_service: Callable[..., Any]) -> None:
    server = in_process_service(max_length=32, truncation="prompt_left")
    prompt, response = list(range(10, 110)), list(range(200, 210))
    truncated = httpx.post(server.url + "/token_rewards", json={"items": [
        {"prompt_token_ids": prompt, "response_token_ids": response},
        {"prompt_token_ids": prompt[-22:], "response_token_ids": response},
    ]})
    assert truncated.status_code == 200, truncated.text
    long_prompt, exact = (r["rewards"] for r in truncated.json()["results"])
    assert long_prompt == pytest.approx(exact, abs=1e-6)
    too_long_response = httpx.post(server.url + "/token_rewards", json={"items": [
        {"prompt_token_ids": [5], "response_token_ids": list(range(10, 50))}]})
    assert too_long_response.status_code == 422
    assert "response alone is longer than max_length" in too_long_response.json()["detail"]


def test_unloadable_model_is_alive_but_never_ready(serve_app: Callable[..., Any], tmp_path: Path) -> None:
    from tlcr.service.app import create_app
    from tlcr.service.settings import ServiceSettings

    failures: list[BaseException] = []
    (tmp_path / "empty").mkdir()
    app = create_app(ServiceSettings(model=str(tmp_path / "empty")), on_fatal=failures.append)
    server = serve_app(app)
    deadline = time.monotonic() + 30
    while not failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert failures, "on_fatal was not called"
    assert httpx.get(server.url + "/healthz").status_code == 200
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 503 and "failed to load" in ready.json()["detail"]
    refused = httpx.post(server.url + "/token_rewards", json={"items": [GOOD]})
    assert refused.status_code == 503 and "Retry-After" in refused.headers
