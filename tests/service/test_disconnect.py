"""A request whose client disconnects while it waits in the batcher is dropped before its forward pass
(real uvicorn on loopback, real discriminator whose forwards are held back by a gate)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tlcr.service.scorer import Encoded, TokenScorer

PROMPT = "\n\nHuman: Which word comes next?\n\nAssistant:"


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the service's /metrics (0 when it has not been recorded yet)."""
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


class GatedForwards:
    """Wraps the real TokenScorer.probabilities: records the decoded response of every item computed, and
    holds each forward while the gate is closed."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.computed: list[str] = []
        self._probabilities = TokenScorer.probabilities

    def __call__(self, scorer: TokenScorer, batch: Sequence[Encoded]) -> list[np.ndarray]:
        self.computed.extend(scorer.tokenizer.decode(e.response_ids) for e in batch)
        self.gate.wait(60)
        return self._probabilities(scorer, batch)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedForwards]:
    forwards = GatedForwards()
    monkeypatch.setattr(TokenScorer, "probabilities", lambda scorer, batch: forwards(scorer, batch))
    yield forwards
    forwards.gate.set()  # never leave a server thread blocked


def body(path: str, word: str) -> dict[str, Any]:
    response = f" The next word is {word}."
    if path == "/get_reward":
        return {"query": [PROMPT + response], "prompts": [PROMPT]}
    return {"items": [{"prompt": PROMPT, "response": response}]}


def rewards(path: str, answer: httpx.Response) -> list[float]:
    """The one item's rewards: per token (/token_rewards) or the scalar (/get_reward)."""
    assert answer.status_code == 200, answer.text
    result = answer.json()
    return result["rewards"] if path == "/get_reward" else result["results"][0]["rewards"]


# application/json is answered by the direct routes, a +json type by FastAPI's route (service/direct_routes.py).
@pytest.mark.parametrize("content_type", ["application/json", "application/x-test+json"])
@pytest.mark.parametrize("path", ["/token_rewards", "/get_reward"])
def test_request_whose_client_disconnected_while_queued_is_never_computed(
        path: str, content_type: str, gated: GatedForwards, in_process_service: Callable[..., Any]) -> None:
    server = in_process_service()
    url = server.url
    queued = {"name": "tlcr_queue_depth", "model": "discriminator"}
    answers: dict[str, httpx.Response] = {}

    def post_in_thread(word: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.setdefault(
            word, httpx.post(url + path, json=body(path, word), timeout=60)))
        thread.start()
        return thread

    gated.gate.clear()
    first = post_in_thread("alpha")
    wait_until(lambda: any("alpha" in text for text in gated.computed), "the first request's forward started")

    # A client sends its request, which queues behind the held forward, and then goes away.
    payload = json.dumps(body(path, "bravo")).encode()
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    wait_until(lambda: metric(url, **queued) == 1, "the request was queued")
    client.close()
    wait_until(lambda: metric(url, "tlcr_dropped_requests_total", route=path) == 1, "the request was dropped")
    assert metric(url, **queued) == 0  # out of the queue at once, not when the next batch is taken

    third = post_in_thread("charlie")
    wait_until(lambda: metric(url, **queued) == 1, "the third request was queued")
    gated.gate.set()
    first.join(60)
    third.join(60)

    assert not any("bravo" in text for text in gated.computed)
    assert metric(url, "tlcr_dropped_sequences_total", model="discriminator") == 1
    assert metric(url, "tlcr_requests_total", route=path, status="499") == 1
    # The others got the same answers as when nothing is held back or dropped.
    for word in ("alpha", "charlie"):
        alone = httpx.post(url + path, json=body(path, word), timeout=60)
        assert rewards(path, answers[word]) == pytest.approx(rewards(path, alone), abs=1e-5)
    assert any("charlie" in text for text in gated.computed)
