"""A scripted OpenAI-compatible chat-completions server on loopback: a TEST AND BENCHMARK TOOL.

It serves POST /v1/chat/completions over real HTTP (uvicorn), so the worker talks to it through the
real `openai` client exactly as to OpenAI, vLLM or Ollama. By default it answers like a perfect
reviser: brief reasons, then the *preferred* response (read back from the instruction) after the
revision marker. A script of rules makes chosen requests misbehave:

    revise      the default answer                      401 / 429 / 500   that HTTP error
    400         vLLM's "maximum context length" refusal (the token count in it differs per request)
    slow        answer after `delay_s` extra seconds     no_marker   an answer without the marker
    empty       a marker with nothing after it          refusal     a refusal of the task, no marker
    truncated   cut before the end marker, finish_reason "length"
    garbage     HTTP 200 whose body is not JSON

A rule applies to requests whose user message contains `match` ("" = all), for its first `times`
matches (None = always). Every answer waits `latency_s` first. GET /stats reports what happened,
POST /script replaces the script. GET /v1/models lists the script's `models`, with `max_model_len` as
vLLM reports it when one is given.

The app is a bare ASGI callable on uvicorn's C parser (httptools) and uvloop, not a FastAPI app: the
benchmark runs it next to the client on the same cores, and FastAPI's routing and response classes
cost ~0.36 ms of CPU per request there, against ~0.1 ms for this (benchmarks/labeling.py prints it).

Run it alone:  python -m tests.support.fake_openai_server --latency 0.2 [--script rules.json] [--port 0]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn

from tlcr.labeling.instruction import (
    PREFERRED_END,
    PREFERRED_START,
    REASONING_END,
    REASONING_START,
    REVISION_END,
    REVISION_START,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

Behaviour = Literal["revise", "400", "401", "429", "500", "slow", "no_marker", "empty", "refusal", "truncated",
                    "garbage"]
BEHAVIOURS: tuple[str, ...] = ("revise", "400", "401", "429", "500", "slow", "no_marker", "empty", "refusal",
                               "truncated", "garbage")


@dataclass
class Rule:
    behaviour: Behaviour
    match: str = ""
    times: int | None = None
    delay_s: float = 1.0      # extra wait of "slow"
    retry_after: str | None = None  # Retry-After header sent with "429"

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}; expected one of {', '.join(BEHAVIOURS)}")


@dataclass
class Script:
    latency_s: float = 0.0
    rules: list[Rule] = field(default_factory=list)
    models: dict[str, int | None] = field(default_factory=dict)  # GET /v1/models: id -> max_model_len

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Script:
        return cls(latency_s=float(data.get("latency_s", 0.0)), rules=[Rule(**r) for r in data.get("rules", [])],
                   models=dict(data.get("models", {})))

    def to_dict(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "rules": [asdict(r) for r in self.rules], "models": self.models}


def message_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def preferred_response(user_message: str) -> str:
    """The preferred response quoted in the instruction (what a perfect reviser would answer)."""
    start = user_message.find(PREFERRED_START)
    end = user_message.find(PREFERRED_END, start)
    if start < 0 or end < 0:
        return ""
    return user_message[start + len(PREFERRED_START):end].strip()


def completion_body(model: str, content: str, finish_reason: str, prompt_text: str, n: int) -> bytes:
    prompt_tokens, completion_tokens = len(prompt_text.split()), len(content.split())
    return json.dumps({
        "id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }).encode("utf-8")


def answer_content(behaviour: str, user_message: str) -> tuple[str, str]:
    """(content, finish_reason) of a 200 answer with `behaviour` to `user_message`."""
    revision = preferred_response(user_message)
    reasons = f"{REASONING_START}\nThe preferred reply is correct, polite and concise.\n{REASONING_END}\n\n"
    if behaviour == "no_marker":
        return "The preferred reply is better. Here is my edit: " + revision, "stop"
    if behaviour == "empty":
        return f"{reasons}{REVISION_START}\n\n{REVISION_END}", "stop"
    if behaviour == "refusal":
        return "I'm sorry, but I can't help with modifying this response.", "stop"
    if behaviour == "truncated":
        return f"{reasons}{REVISION_START}\n{revision[: max(1, len(revision) // 2)]}", "length"
    return f"{reasons}{REVISION_START}\n{revision}\n{REVISION_END}", "stop"


def error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind}}).encode("utf-8")


# Scripted HTTP errors: status, body (serialized once).
ERRORS: dict[str, tuple[int, bytes]] = {
    "429": (429, error_body("rate limited (scripted)", "rate_limit_error")),
    "401": (401, error_body("invalid API key (scripted)", "invalid_request_error")),
    "500": (500, error_body("server error (scripted)", "server_error")),
    "garbage": (200, b"<html>this is not JSON</html>"),
}
JSON_CONTENT = (b"content-type", b"application/json")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ServerState:
    """The script and what the server has seen since it was last set."""

    script: Script
    rule_uses: Counter[int] = field(default_factory=Counter)
    behaviours: Counter[str] = field(default_factory=Counter)
    by_message: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def choose(self, user_message: str) -> tuple[str, Rule | None]:
        """The behaviour for this request: the first rule that matches and is not used up, else "revise"."""
        for index, rule in enumerate(self.script.rules):
            if rule.match in user_message and (rule.times is None or self.rule_uses[index] < rule.times):
                self.rule_uses[index] += 1
                return rule.behaviour, rule
        return "revise", None

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "behaviours": dict(self.behaviours),
                "by_message": dict(self.by_message), "max_in_flight": self.max_in_flight}


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [JSON_CONTENT, *headers]})
    await send({"type": "http.response.body", "body": body})


class FakeOpenAIApp:
    """The ASGI app: POST /v1/chat/completions, GET /stats, POST /script (replace the script, reset counts)."""

    def __init__(self, script: Script | None = None) -> None:
        self.state = ServerState(script or Script())

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/chat/completions"):
            await self.chat_completions(receive, send)
        elif route == ("GET", "/v1/models"):
            data = [{"id": name, "object": "model", "owned_by": "fake",
                     **({"max_model_len": length} if length is not None else {})}
                    for name, length in self.state.script.models.items()]
            await _respond(send, 200, json.dumps({"object": "list", "data": data}).encode("utf-8"))
        elif route == ("GET", "/stats"):
            await _respond(send, 200, json.dumps(self.state.stats()).encode("utf-8"))
        elif route == ("POST", "/script"):
            self.state = ServerState(Script.from_dict(json.loads(await _read_body(receive))))
            await _respond(send, 200, json.dumps(self.state.script.to_dict()).encode("utf-8"))
        else:
            await _respond(send, 404, error_body(f"no route {route[0]} {route[1]}", "not_found"))

    async def chat_completions(self, receive: Receive, send: Send) -> None:
        body = json.loads(await _read_body(receive))
        messages = body.get("messages") or []
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        state = self.state
        state.requests += 1
        n = state.requests
        state.by_message[message_digest(user)] += 1
        behaviour, rule = state.choose(user)
        state.behaviours[behaviour] += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.script.latency_s + (rule.delay_s if rule and behaviour == "slow" else 0.0))
        finally:
            state.in_flight -= 1
        if behaviour in ERRORS:
            status, error = ERRORS[behaviour]
            headers = [(b"retry-after", rule.retry_after.encode())] if rule and rule.retry_after is not None else []
            await _respond(send, status, error, headers)
            return
        if behaviour == "400":
            message = (f"This model's maximum context length is 512 tokens. However, your prompt contains at least "
                       f"{512 + n} input tokens. Please reduce the length of the input prompt.")
            await _respond(send, 400, error_body(message, "BadRequestError"))
            return
        content, finish = answer_content(behaviour, user)
        await _respond(send, 200, completion_body(str(body.get("model", "fake")), content, finish, user, n))


def create_app(script: Script | None = None) -> FakeOpenAIApp:
    return FakeOpenAIApp(script)


def _bind_loopback(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)  # many concurrent clients in the benchmark
    return sock


class FakeOpenAIServer:
    """The fake server on a free loopback port, served by uvicorn in a background thread.

    Use as a context manager; `base_url` is what `openai.AsyncOpenAI(base_url=...)` takes.
    """

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self._sock = _bind_loopback()
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(create_app(self.script), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10).json()

    def set_script(self, script: Script) -> None:
        import httpx

        httpx.post(f"http://127.0.0.1:{self.port}/script", json=script.to_dict(), timeout=10).raise_for_status()


class FakeOpenAIServerProcess:
    """The fake server in its own process (so its CPU work does not share the caller's GIL)."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> FakeOpenAIServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_openai_server", "--script-json",
             json.dumps(self.script.to_dict())],
            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,  # `-m` finds the `tests` package from there
            start_new_session=True)  # its own process group, killed whole by stop()
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"fake OpenAI server process did not start (said {line!r})")
        self.base_url = line
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the fake OpenAI server process is not started")
        return self._proc.pid

    def stop(self) -> None:
        from tests.support.processes import kill_group

        if self._proc is not None:
            kill_group(self._proc)

    def __enter__(self) -> FakeOpenAIServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=None, help="seconds before every answer")
    parser.add_argument("--script", help="JSON file {latency_s, rules: [{behaviour, match, times, ...}]}")
    parser.add_argument("--script-json", help="the same script as a JSON string")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    args = parser.parse_args(argv)
    data: dict[str, Any] = {}
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            data = json.load(f)
    elif args.script_json:
        data = json.loads(args.script_json)
    script = Script.from_dict(data)
    if args.latency is not None:
        script.latency_s = args.latency
    sock = _bind_loopback(args.port)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    config = uvicorn.Config(create_app(script), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
