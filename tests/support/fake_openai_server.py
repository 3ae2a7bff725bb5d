"""A scripted OpenAI-compatible chat-completions server on loopback: a TEST AND BENCHMARK TOOL.

It is a real FastAPI + uvicorn app serving POST /v1/chat/completions, so the worker talks to it through
the real `openai` client exactly as to OpenAI, vLLM or Ollama. By default it answers like a perfect
reviser: brief reasons, then the *preferred* response (read back from the instruction) after the
revision marker. A script of rules makes chosen requests misbehave:

    revise      the default answer                      401 / 429 / 500   that HTTP error
    slow        answer after `delay_s` extra seconds     no_marker   an answer without the marker
    empty       a marker with nothing after it          refusal     a refusal of the task, no marker
    truncated   cut before the end marker, finish_reason "length"
    garbage     HTTP 200 whose body is not JSON

A rule applies to requests whose user message contains `match` ("" = all), for its first `times`
matches (None = always). Every answer waits `latency_s` first. GET /stats reports what happened.

Run it alone:  python -m labeling.fake_openai_server --latency 0.2 [--script rules.json] [--port 0]
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from labeling.instruction import (
    PREFERRED_END,
    PREFERRED_START,
    REASONING_END,
    REASONING_START,
    REVISION_END,
    REVISION_START,
)

Behaviour = Literal["revise", "401", "429", "500", "slow", "no_marker", "empty", "refusal", "truncated",
                    "garbage"]
BEHAVIOURS: tuple[str, ...] = ("revise", "401", "429", "500", "slow", "no_marker", "empty", "refusal",
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Script:
        return cls(latency_s=float(data.get("latency_s", 0.0)), rules=[Rule(**r) for r in data.get("rules", [])])

    def to_dict(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "rules": [asdict(r) for r in self.rules]}


def message_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def preferred_response(user_message: str) -> str:
    """The preferred response quoted in the instruction (what a perfect reviser would answer)."""
    start = user_message.find(PREFERRED_START)
    end = user_message.find(PREFERRED_END, start)
    if start < 0 or end < 0:
        return ""
    return user_message[start + len(PREFERRED_START):end].strip()


def _completion(model: str, content: str, finish_reason: str, prompt_text: str, n: int) -> dict[str, Any]:
    prompt_tokens, completion_tokens = len(prompt_text.split()), len(content.split())
    return {
        "id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def create_app(script: Script | None = None) -> FastAPI:
    app = FastAPI(title="fake OpenAI-compatible reviser (tests and benchmarks only)")
    state: dict[str, Any] = {"script": script or Script(), "rule_uses": Counter(), "behaviours": Counter(),
                             "by_message": Counter(), "requests": 0, "in_flight": 0, "max_in_flight": 0}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        model = str(body.get("model", "fake"))
        state["requests"] += 1
        n = state["requests"]
        state["by_message"][message_digest(user)] += 1
        current: Script = state["script"]
        behaviour: str = "revise"
        rule: Rule | None = None
        for index, candidate in enumerate(current.rules):
            if candidate.match in user and (candidate.times is None or state["rule_uses"][index] < candidate.times):
                state["rule_uses"][index] += 1
                rule, behaviour = candidate, candidate.behaviour
                break
        state["behaviours"][behaviour] += 1
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            await asyncio.sleep(current.latency_s + (rule.delay_s if rule and behaviour == "slow" else 0.0))
        finally:
            state["in_flight"] -= 1
        if behaviour == "429":
            headers = {"retry-after": rule.retry_after} if rule and rule.retry_after is not None else {}
            return JSONResponse({"error": {"message": "rate limited (scripted)", "type": "rate_limit_error"}},
                                status_code=429, headers=headers)
        if behaviour == "401":
            return JSONResponse({"error": {"message": "invalid API key (scripted)", "type": "invalid_request_error"}},
                                status_code=401)
        if behaviour == "500":
            return JSONResponse({"error": {"message": "server error (scripted)", "type": "server_error"}},
                                status_code=500)
        if behaviour == "garbage":
            return PlainTextResponse("<html>this is not JSON</html>", status_code=200,
                                     media_type="application/json")
        revision = preferred_response(user)
        reasons = f"{REASONING_START}\nThe preferred reply is correct, polite and concise.\n{REASONING_END}\n\n"
        finish = "stop"
        if behaviour == "no_marker":
            content = "The preferred reply is better. Here is my edit: " + revision
        elif behaviour == "empty":
            content = f"{reasons}{REVISION_START}\n\n{REVISION_END}"
        elif behaviour == "refusal":
            content = "I'm sorry, but I can't help with modifying this response."
        elif behaviour == "truncated":
            content, finish = f"{reasons}{REVISION_START}\n{revision[: max(1, len(revision) // 2)]}", "length"
        else:
            content = f"{reasons}{REVISION_START}\n{revision}\n{REVISION_END}"
        return JSONResponse(_completion(model, content, finish, user, n))

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"requests": state["requests"], "behaviours": dict(state["behaviours"]),
                "by_message": dict(state["by_message"]), "max_in_flight": state["max_in_flight"]}

    @app.post("/script")
    async def set_script(request: Request) -> dict[str, Any]:
        """Replace the script and reset the counters."""
        state["script"] = Script.from_dict(await request.json())
        for key in ("rule_uses", "behaviours", "by_message"):
            state[key] = Counter()
        state["requests"] = state["max_in_flight"] = 0
        return state["script"].to_dict()

    return app


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
            [sys.executable, "-m", "labeling.fake_openai_server", "--script-json", json.dumps(self.script.to_dict())],
            stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"fake OpenAI server process did not start (said {line!r})")
        self.base_url = line
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

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
