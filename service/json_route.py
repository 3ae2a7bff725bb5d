"""Routes whose JSON bodies are parsed with the garbage collector paused.

Parsing a body of many small arrays (token ids, offset pairs) allocates millions of objects, and each
allocation burst triggers a collection that walks every live object of the process. With torch and
transformers imported, `json.loads` of a 2 MB body of 350k offset pairs took 3.6-5.7 s, and 0.45-0.52 s
with the collector paused (3 runs each, interleaved, on a loaded 2-CPU machine); after `gc.freeze()` of
the imported objects (what the service does once its models are loaded) json.loads took 0.61-0.71 s.
The parse holds the GIL throughout, so pausing the collector for its duration affects nothing else; the
objects are collected normally afterwards.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


@contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector paused for the block (parsing a body; see above)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_json(body: bytes) -> Any:
    """`json.loads(body)` with the garbage collector paused."""
    with gc_paused():
        return json.loads(body)


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class PausedGCJSONRoute(APIRoute):
    """An APIRoute whose request body is parsed by `parse_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return route_handler
