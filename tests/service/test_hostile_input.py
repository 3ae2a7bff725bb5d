"""Hostile input over real HTTP: each gets one 4xx shape ({"detail": str}) listed in the OpenAPI schema, the
connection stays usable, and nothing the server holds (paths, other hosts' pages) leaks or gets in."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from tlcr.core.models import load_tokenizer
from tlcr.service.guards import BigBodySlotMiddleware, InternalErrorMiddleware, release_parse_slot
from tlcr.service.items import longest_token_chars
from tlcr.service.launcher import ServiceProcess

JSON = {"Content-Type": "application/json"}
PROMPT = "\n\nHuman: Hi\n\nAssistant:"


@pytest.fixture(scope="module")
def http(shared_service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_service.url, timeout=30) as client:
        yield client


def _detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"detail"} and isinstance(response.json()["detail"], str)
    return str(response.json()["detail"])


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/token_rewards", '{"items": [{"prompt": "a", "response": "x\\ud800y"}]}', "items[0].response"),
    ("/get_reward", '{"query": ["\\ud83d"], "prompts": [""]}', "query[0]"),
    ("/sequence_rewards", '{"items": [{"prompt": "\\udfff", "response": "y"}]}', "items[0].prompt"),
])
def test_lone_surrogate_is_a_422_and_the_connection_stays_open(http: httpx.Client, path: str, body: str,
                                                                where: str) -> None:
    detail = _detail(http.post(path, content=body.encode(), headers=JSON), 422)
    assert where in detail and "lone surrogate" in detail
    # Same keep-alive connection: the next request is served.
    assert http.post("/token_rewards", json={"items": [{"prompt": PROMPT, "response": " Hi."}]}).status_code == 200


@pytest.mark.parametrize("bad_id", ['"1"', "true", "1.0"])
def test_token_ids_must_be_json_integers(http: httpx.Client, bad_id: str) -> None:
    body = f'{{"items": [{{"prompt_token_ids": [1], "response_token_ids": [2, {bad_id}]}}]}}'
    detail = _detail(http.post("/token_rewards", content=body.encode(), headers=JSON), 422)
    assert "items[0].response_token_ids[1]" in detail and "valid integer" in detail


@pytest.mark.parametrize(("name", "body", "headers", "status", "fragment"), [
    ("invalid UTF-8", b'{"items": [{"prompt": "\xff\xfe", "response": "x"}]}', JSON, 400, "not valid UTF-8"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, JSON, 400, "nests arrays or objects too deeply"),
    ("huge integer", b'{"items": [{"prompt_token_ids": [' + b"9" * 5000 + b'], "response_token_ids": [1]}]}',
     JSON, 400, "number too long"),
    ("gzip body", gzip.compress(b'{"items": []}'), {**JSON, "Content-Encoding": "gzip"}, 415, "'gzip' is not accepted"),
])
def test_unreadable_bodies_say_why(http: httpx.Client, name: str, body: bytes, headers: dict[str, str],
                                   status: int, fragment: str) -> None:
    assert fragment in _detail(http.post("/token_rewards", content=body, headers=headers), status), name
    assert http.get("/healthz").status_code == 200


def test_text_too_long_to_fit_is_refused_before_tokenizing(http: httpx.Client, tiny_token_classifier_dir: Path,
                                                           sequence_rm_dir: Path) -> None:
    max_chars = 256 * longest_token_chars(load_tokenizer(tiny_token_classifier_dir))  # shared max_length: 256
    long_response = "y" * (max_chars + 1)
    detail = _detail(http.post("/token_rewards", json={"items": [{"prompt": "", "response": long_response}]}), 422)
    assert f"items[0].response: has {max_chars + 1} characters" in detail and f"more than {max_chars}" in detail
    sequence_chars = 512 * longest_token_chars(load_tokenizer(sequence_rm_dir))  # its max_length: 512
    item = {"prompt": "p" * sequence_chars, "response": "y"}
    detail = _detail(http.post("/sequence_rewards", json={"items": [item]}), 422)
    assert "items[0]: prompt + response have" in detail and "--truncation prompt_left" in detail


def test_offsets_are_capped_and_overlap_cannot_balloon_the_reply(in_process_service: Callable[..., Any]) -> None:
    server = in_process_service(max_offsets_per_item=16)
    item = {"prompt": PROMPT, "response": " Hello there."}
    detail = _detail(httpx.post(server.url + "/token_rewards", json={"items": [
        {**item, "response_offsets": [[0, 1]] * 17}]}), 422)
    assert "items[0].response_offsets: 17 spans exceed the limit of 16" in detail
    # Spans may overlap: eight covering the whole response get eight rewards.
    whole = [[0, 13]] * 8
    ok = httpx.post(server.url + "/token_rewards", json={"items": [{**item, "response_offsets": whole}]})
    assert ok.status_code == 200 and len(ok.json()["results"][0]["rewards"]) == 8
    long_item = {"prompt": PROMPT, "response": "x" * 200}
    detail = _detail(httpx.post(server.url + "/token_rewards", json={
        "items": [{**long_item, "response_offsets": [[0, 200]] * 16}], "return_tokens": True}), 422)
    assert "cover 3200 characters of a 200-character response" in detail  # over 8 × 200 + 1024
    assert httpx.post(server.url + "/token_rewards", json={
        "items": [{**long_item, "response_offsets": [[0, 200]] * 12}], "return_tokens": True}).status_code == 200


def test_openapi_lists_every_error_and_bearer_only_with_a_key(in_process_service: Callable[..., Any],
                                                              http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    for path in ("/token_rewards", "/sequence_rewards", "/get_reward"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "413", "415", "422", "503"} <= set(responses), path
        assert "401" not in responses and "security" not in schema["paths"][path]["post"]
    assert "securitySchemes" not in schema.get("components", {})
    keyed = httpx.get(in_process_service(api_key="k").url + "/openapi.json").json()
    assert keyed["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "401" in keyed["paths"]["/token_rewards"]["post"]["responses"]
    assert keyed["paths"]["/token_rewards"]["post"]["security"] == [{"HTTPBearer": []}]


def test_head_on_health_routes_and_info_without_paths(http: httpx.Client) -> None:
    for path in ("/healthz", "/readyz"):
        response = http.head(path)
        assert response.status_code == 200 and response.content == b""
    info = http.get("/info").json()
    assert "/" not in json.dumps({k: v for k, v in info.items() if k in ("model", "tokenizer", "sequence_model")})
    assert info["model"] == "tiny-token-classifier0" or "/" not in info["model"]


def test_host_allowlist_on_by_default_for_a_keyless_loopback_bind(in_process_service: Callable[..., Any]) -> None:
    server = in_process_service()
    rebinding = httpx.get(server.url + "/healthz", headers={"Host": f"attacker.example:{server.port}"})
    assert "Host 'attacker.example" in _detail(rebinding, 400) and "--allowed-hosts" in rebinding.json()["detail"]
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert httpx.get(server.url + "/healthz", headers={"Host": host}).status_code == 200, host
    for overrides in ({"allowed_hosts": ["*"]}, {"api_key": "k"}, {"allowed_hosts": ["rewards.internal", "127.0.0.1"]}):
        other = in_process_service(**overrides)
        host = "rewards.internal" if "allowed_hosts" in overrides else "anything.example"
        assert httpx.get(other.url + "/healthz", headers={"Host": host}).status_code == 200, overrides


def test_a_bug_answers_500_naming_only_the_type_and_keeps_the_connection(serve_app: Callable[..., Any]) -> None:
    app = FastAPI()
    errors: list[int] = []

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /srv/models")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(InternalErrorMiddleware, on_error=lambda: errors.append(1))
    server = serve_app(app)
    with httpx.Client(base_url=server.url) as client:
        detail = _detail(client.get("/boom"), 500)
        assert "RuntimeError" in detail and "secret" not in detail
        assert client.get("/fine").json() == {"ok": "yes"}  # same connection, still open
    assert errors == [1]


def test_big_bodies_are_parsed_one_at_a_time_after_being_read(serve_app: Callable[..., Any]) -> None:
    events: list[str] = []
    app = FastAPI()

    @app.post("/hold")  # keeps the slot until its response ends
    async def hold(request: Request) -> dict[str, int]:
        events.append(f"start {request.query_params['n']}")
        await asyncio.sleep(0.3)
        events.append(f"end {request.query_params['n']}")
        return {"bytes": len(await request.body())}

    @app.post("/release")  # what the service's routes do once FastAPI has parsed the body
    async def release(request: Request) -> dict[str, int]:
        release_parse_slot(request.scope)
        events.append(f"start {request.query_params['n']}")
        await asyncio.sleep(0.3)
        events.append(f"end {request.query_params['n']}")
        return {"bytes": len(await request.body())}

    app.add_middleware(BigBodySlotMiddleware, threshold=1000, max_values=1_000_000)
    server = serve_app(app)
    big = b"x" * 5000

    answers: list[Any] = []

    def post(path: str, n: int, body: bytes = big) -> None:
        answers.append(httpx.post(f"{server.url}{path}?n={n}", content=body).json() == {"bytes": len(body)})

    # A sender trickling a big body holds no slot: others go first.
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"POST /hold?n=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n" + big[:100])
    threads = [threading.Thread(target=post, args=("/hold", n)) for n in (1, 2)]
    threads.append(threading.Thread(target=post, args=("/hold", 3, b"small")))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slow.sendall(big[100:])
    assert b"200 OK" in slow.recv(1000)
    slow.close()
    big_order = [e for e in events if e[-1] in "12"]
    assert big_order in (["start 1", "end 1", "start 2", "end 2"], ["start 2", "end 2", "start 1", "end 1"])
    assert events.index("start 3") < events.index(big_order[3])  # a small body never waits for the slot
    events.clear()
    threads = [threading.Thread(target=post, args=("/release", n)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events[:2] in (["start 1", "start 2"], ["start 2", "start 1"])  # released at the route's start
    assert answers == [True] * 5


def test_json_is_parsed_with_the_collector_paused_and_restored() -> None:
    import gc

    from tlcr.service.json_route import parse_json

    body = b'{"items": [{"response_offsets": [[0, 1], [1, 2]]}]}'
    assert parse_json(body) == json.loads(body) and gc.isenabled()
    with pytest.raises(json.JSONDecodeError):
        parse_json(b"{bad")
    assert gc.isenabled()
    gc.disable()
    try:
        parse_json(body)
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_big_body_with_too_many_json_values_is_refused_before_parsing(
        in_process_service: Callable[..., Any]) -> None:
    server = in_process_service(max_json_values=600_000)
    ids = b",".join([b"1"] * 700_000)
    body = b'{"items": [{"prompt_token_ids": [1], "response_token_ids": [' + ids + b"]}]}"
    detail = _detail(httpx.post(server.url + "/token_rewards", content=body, headers=JSON), 413)
    assert "about 700001 JSON values, more than the limit of 600000" in detail and "--max-json-values" in detail
    # Commas inside strings are text, not values: this body is judged on its content (too long to fit).
    text = {"items": [{"prompt": "", "response": "a," * 700_000}]}
    detail = _detail(httpx.post(server.url + "/token_rewards", json=text), 422)
    assert "items[0].response: has 1400000 characters" in detail
