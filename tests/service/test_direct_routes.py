"""The direct routes (service/direct_routes.py) answer exactly as FastAPI does: the same bytes for every
well-formed request they take, and every other request handed to FastAPI unchanged.

Two real apps under uvicorn on loopback, built from the same settings: the service as it ships, and the
same service without its direct routes (every request through FastAPI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from tlcr.service.app import create_app
from tlcr.service.direct_routes import DirectRoutes, bearer_token, is_json
from tlcr.service.settings import ServiceSettings

from .conftest import ThreadedServer, wait_ready

KEY = "direct-test-key"
AUTH = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
IDS = {"prompt_token_ids": [5, 6, 7, 8], "response_token_ids": [9, 10, 11]}
TEXT = {"prompt": "Tell me a fact.", "response": "Water boils at 100 C."}


class CountingDirectRoutes(DirectRoutes):
    """DirectRoutes that counts the requests it hands on to FastAPI."""

    handed_on = 0

    def __init__(self, app: Any, **kwargs: Any) -> None:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                CountingDirectRoutes.handed_on += 1
            await app(scope, receive, send)

        super().__init__(counted, **kwargs)


def _with_direct_routes(app: FastAPI, cls: type[DirectRoutes] | None) -> FastAPI:
    """The app with its DirectRoutes middleware replaced by `cls`, or removed (None)."""
    kept = []
    for middleware in app.user_middleware:
        if middleware.cls is DirectRoutes:
            if cls is None:
                continue
            middleware = Middleware(cls, *middleware.args, **middleware.kwargs)
        kept.append(middleware)
    assert len(kept) == len(app.user_middleware) - (cls is None)
    app.user_middleware = kept
    return app


@pytest.fixture(scope="module")
def servers(tiny_token_classifier_dir: Path, sequence_rm_dir: Path) -> Any:
    """(direct, fastapi_only): the shipped app and the same app without direct routes."""
    settings = ServiceSettings(model=str(tiny_token_classifier_dir), sequence_model=str(sequence_rm_dir),
                               api_key=KEY, max_items_per_request=4, torch_threads=1, max_wait_ms=2)
    direct = ThreadedServer(_with_direct_routes(create_app(settings), CountingDirectRoutes))
    fastapi_only = ThreadedServer(_with_direct_routes(create_app(settings), None))
    try:
        for server in (direct, fastapi_only):
            wait_ready(server.url, timeout=120)
        yield direct, fastapi_only
    finally:
        direct.stop()
        fastapi_only.stop()


def _answer(url: str, path: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[Any, ...]:
    response = httpx.request(method, url + path, content=body, headers=headers, timeout=60)
    kept = {k: response.headers.get(k) for k in ("content-type", "retry-after", "www-authenticate", "allow")}
    return response.status_code, response.content, kept


def _same_answer(servers: Any, path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None,
                 method: str = "POST") -> tuple[int, bytes, int]:
    """Both apps' answers, asserted equal; → (status, body, requests the direct app handed on to FastAPI)."""
    direct, fastapi_only = servers
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = AUTH if headers is None else headers
    before = CountingDirectRoutes.handed_on
    got = _answer(direct.url, path, raw, headers, method)
    handed_on = CountingDirectRoutes.handed_on - before
    assert got == _answer(fastapi_only.url, path, raw, headers, method)
    return got[0], got[1], handed_on


@pytest.mark.parametrize(("path", "body"), [
    ("/token_rewards", {"items": [IDS]}),
    ("/token_rewards", {"items": [TEXT, IDS], "mode": "fixed", "threshold": 0.7,
                        "return_probabilities": True, "return_tokens": True}),
    ("/token_rewards", {"items": [{**TEXT, "response_offsets": [[0, 5], [5, 11], [11, 21]]}],
                        "return_probabilities": True, "return_tokens": True}),
    ("/token_rewards", {"items": [IDS, IDS, IDS], "mode": "positive_only"}),
    ("/sequence_rewards", {"items": [TEXT, {"prompt": "Hi", "response": "Hello there."}]}),
    ("/get_reward", {"query": ["Tell me a fact. Water boils at 100 C."], "prompts": ["Tell me a fact."],
                     "labels": ["ignored"]}),
])
def test_well_formed_requests_are_answered_directly_with_fastapis_bytes(servers: Any, path: str,
                                                                        body: dict[str, Any]) -> None:
    status, content, handed_on = _same_answer(servers, path, body)
    assert status == 200 and json.loads(content)
    assert handed_on == 0


LONG = {"prompt_token_ids": [5] * 5000, "response_token_ids": [6]}


@pytest.mark.parametrize(("body", "headers", "status", "handed_on"), [
    # Refused by validation: FastAPI words every message.
    (b'{"items": []}', None, 422, 1),
    (b'{"items": [{"prompt_token_ids": ["1"], "response_token_ids": [2]}]}', None, 422, 1),
    (b'{"items": [{"prompt_token_ids": [1.0], "response_token_ids": [true]}]}', None, 422, 1),
    (b'{"items": [{"prompt": "\\ud800", "response": "x"}]}', None, 422, 1),
    (b'{"items": [{"prompt": "a", "response": "b"}], "extra": 1}', None, 422, 1),
    (b'{"items": [{"prompt": "a", "response": "b"}], "threshold": NaN}', None, 422, 1),
    (b'{"items": [{"prompt": "a", "response": "b"}], "threshold": 1e999}', None, 422, 1),
    (b'{"items": [{"prompt_token_ids": [1e400], "response_token_ids": [2]}]}', None, 422, 1),
    (b'{bad', None, 422, 1),
    (b'', None, 422, 1),
    (b'null', None, 422, 1),
    (b'[' * 5000 + b']' * 5000, None, 400, 1),
    (b'{"items": [{"prompt": "\xff\xfe", "response": "b"}]}', None, 400, 1),
    # Valid JSON that JSON parsers read differently: duplicate keys (the last wins in both).
    (b'{"items": [{"prompt": "a", "response": "b"}], "items": [{"prompt": "c", "response": "d"}]}', None, 200, 0),
    # Not JSON by its content type, or not authorized: FastAPI answers.
    (json.dumps({"items": [IDS]}).encode(), {"authorization": f"Bearer {KEY}", "content-type": "text/plain"}, 422, 1),
    (json.dumps({"items": [IDS]}).encode(), {"authorization": f"Bearer {KEY}"}, 422, 1),
    (json.dumps({"items": [IDS]}).encode(), {"content-type": "application/json"}, 401, 1),
    (json.dumps({"items": [IDS]}).encode(), {"authorization": "Bearer wrong", "content-type": "application/json"},
     401, 1),
    (json.dumps({"items": [IDS]}).encode(), {"authorization": f"bearer  {KEY}",
                                            "content-type": "application/json; charset=utf-8"}, 200, 0),
    # Valid for the schema, refused by the serving layer: the app's exception handlers answer the direct route.
    (json.dumps({"items": [IDS] * 5}).encode(), None, 422, 0),
    (json.dumps({"items": [LONG]}).encode(), None, 422, 0),
    (json.dumps({"items": [{"prompt_token_ids": [10**9], "response_token_ids": [1]}]}).encode(), None, 422, 0),
])
def test_every_other_request_gets_fastapis_answer(servers: Any, body: bytes, headers: dict[str, str] | None,
                                                  status: int, handed_on: int) -> None:
    got_status, content, got_handed_on = _same_answer(servers, "/token_rewards", body, headers)
    assert (got_status, got_handed_on) == (status, handed_on), content
    assert json.loads(content)


def test_big_and_chunked_bodies_go_to_fastapi(servers: Any) -> None:
    """Over 1 MiB, or of unknown length: parsed once, by FastAPI (an invalid one is never parsed twice)."""
    padded = json.dumps({"items": [IDS]}).encode() + b" " * (1 << 20)
    assert _same_answer(servers, "/token_rewards", padded)[::2] == (200, 1)
    before = CountingDirectRoutes.handed_on
    answers = [httpx.post(server.url + "/token_rewards", headers=AUTH, timeout=60,
                          content=iter([b'{"items": ', json.dumps([IDS]).encode(), b"}"]))
               for server in servers]
    assert CountingDirectRoutes.handed_on == before + 1
    assert answers[0].status_code == 200 and answers[0].content == answers[1].content


def test_other_methods_and_paths_go_to_fastapi(servers: Any) -> None:
    assert _same_answer(servers, "/token_rewards", b"", method="GET")[::2] == (405, 1)
    assert _same_answer(servers, "/token_rewards/", b'{"items": []}')[2] == 1
    assert _same_answer(servers, "/info", b"", method="GET")[::2] == (200, 1)


def test_direct_requests_are_counted_under_their_route(servers: Any) -> None:
    direct, _ = servers

    def count() -> float:
        for line in httpx.get(direct.url + "/metrics").text.splitlines():
            if line.startswith('tlcr_requests_total{route="/token_rewards",status="200"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    assert _same_answer(servers, "/token_rewards", {"items": [IDS]})[::2] == (200, 0)
    assert count() == before + 1


@pytest.mark.parametrize(("value", "expected"), [
    (b"application/json", True), (b"Application/JSON; charset=utf-8", True), (b" application/json ;x=y", True),
    (b"application/json-seq", False), (b"application/vnd.api+json", False), (b"text/plain", False), (b"", False),
])
def test_is_json(value: bytes, expected: bool) -> None:
    assert is_json(value) is expected


@pytest.mark.parametrize(("value", "expected"), [
    (b"Bearer abc", "abc"), (b"bearer  abc ", "abc"), (b"Basic abc", None), (b"Bearer", None), (b"Bearer ", None),
])
def test_bearer_token(value: bytes, expected: str | None) -> None:
    assert bearer_token(value) == expected

