"""Prometheus metrics of the service (prometheus-client), one registry per app so tests can run several.

Requests are counted per route template (never per raw path, so a scan of random URLs cannot blow up
the label set) and status; batches record size, real and padded tokens and forward time; the queue
depth is a gauge; requests dropped because their client disconnected are counted, and so are queued
sequences taken out before their forward pass because their request was cancelled.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tlcr_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("tlcr_request_latency_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("tlcr_requests_in_flight", "HTTP requests being handled", registry=r)
        self.items = Counter("tlcr_items", "Items scored, by route", ["route"], registry=r)
        self.errors = Counter("tlcr_errors", "Errors by kind (validation, overload, auth, model, ...)", ["kind"],
                              registry=r)
        self.batch_size = Histogram("tlcr_batch_size", "Sequences per forward batch", ["model"],
                                    buckets=SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram("tlcr_batch_tokens", "Real tokens per forward batch", ["model"],
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.batch_padded_tokens = Histogram("tlcr_batch_padded_tokens",
                                             "Tokens computed per forward batch, padding included (with prefix "
                                             "sharing, a prompt several sequences share counts once; a packed "
                                             "forward computes no padding)",
                                             ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.forward_seconds = Histogram("tlcr_forward_seconds", "Time of one forward batch", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("tlcr_queue_depth", "Sequences waiting for a forward batch", ["model"], registry=r)
        self.dropped_requests = Counter(
            "tlcr_dropped_requests", "Requests whose client disconnected before the response, by route; their "
            "work was cancelled, so their sequences still queued were never computed", ["route"], registry=r)
        self.dropped_sequences = Counter(
            "tlcr_dropped_sequences", "Queued sequences taken out before their forward pass because their request "
            "was cancelled (client disconnected, or request timeout)", ["model"], registry=r)

    def observer(self, model: str) -> BatchMetrics:
        return BatchMetrics(self, model)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchMetrics:
    """The batcher's view of the metrics (implements `tlcr.service.batcher.BatchObserver`)."""

    def __init__(self, metrics: ServiceMetrics, model: str) -> None:
        # The labelled children once: `.labels()` per call cost ~2 % of the event loop's time per request.
        self._size = metrics.batch_size.labels(model)
        self._tokens = metrics.batch_tokens.labels(model)
        self._padded = metrics.batch_padded_tokens.labels(model)
        self._seconds = metrics.forward_seconds.labels(model)
        self._queue = metrics.queue.labels(model)
        self._dropped = metrics.dropped_sequences.labels(model)

    def batch_done(self, size: int, tokens: int, padded_tokens: int, seconds: float) -> None:
        self._size.observe(size)
        self._tokens.observe(tokens)
        self._padded.observe(padded_tokens)
        self._seconds.observe(seconds)

    def queue_depth(self, depth: int) -> None:
        self._queue.set(depth)

    def sequences_dropped(self, count: int) -> None:
        self._dropped.inc(count)


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no response buffering) counting requests and timing them per route."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # labelled (count, latency) per route, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            children = self._children.get((template, status))
            if children is None:  # route templates × statuses: a bounded set
                children = self._children[(template, status)] = (
                    self.metrics.requests.labels(template, str(status)), self.metrics.latency.labels(template))
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
