"""The reward service as a Ray Serve application: the same FastAPI app in every replica.

Each replica is a Ray actor that builds the app of `tlcr.service.app.create_app` (its routes, schemas,
limits, auth and dynamic batcher unchanged) and serves it behind Ray Serve's HTTP proxy, which balances
requests over the replicas. Ray replaces a replica whose process dies or whose health check fails.

What this module adds around the app, without changing it:
- a replica counts as started only once its models are loaded and warmed up, so the proxy never routes to a
  replica that would answer 503 "loading" (and `/readyz` through the proxy answers 200 only from a ready one);
  each response names its replica in the `x-tlcr-replica` header;
- its health check fails if the models failed to load, and Ray replaces it;
- `/metrics` is the sum over the live replicas (tlcr.service.metrics_merge): each replica pushes its own
  registry every second to a small `MetricsBoard` deployment of the same application, and the replica that
  answers a scrape adds its fresh snapshot to the others' latest.

Started by `tlcr serve-ray` (tlcr.service.ray_cli) or, on a running cluster, by `serve run` / `serve deploy`
with `configs/ray/serve.yaml` (import path `tlcr.service.ray_app:app_builder`). docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from fastapi.routing import APIRoute
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tlcr.core.exit_codes import ExitCode
from tlcr.core.logs import package_level, setup_logging, verbosity_of_level
from tlcr.service.app import create_app
from tlcr.service.metrics_merge import merge_metrics
from tlcr.service.ray_settings import RayServeSettings
from tlcr.service.settings import ServiceSettings
from tlcr.service.state import ServiceState

logger = logging.getLogger(__name__)

REPLICA_DEPLOYMENT = "RewardReplica"
REPLICA_HEADER = "x-tlcr-replica"
QUIET = {"enable_access_log": False}  # a log line per request is noise at training rates
METRICS_PUSH_S = 1.0
METRICS_STALE_S = 5.0  # a snapshot older than this belongs to a replica that is gone
METRICS_CALL_TIMEOUT_S = 2.0
LOAD_POLL_S = 0.05


class ReplicaApp:
    """ASGI wrapper of one replica's app: its lifespan startup completes only once the models are loaded (or
    fails if they cannot be), so Ray Serve marks the replica RUNNING, and routes to it, only when it can
    score; every response names the replica that answered (`x-tlcr-replica`)."""

    def __init__(self, app: ASGIApp, state: ServiceState, replica: str) -> None:
        self.app = app
        self.state = state
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._send_when_loaded(send))
        elif scope["type"] == "http":
            await self.app(scope, receive, self._send_with_replica(send))
        else:
            await self.app(scope, receive, send)

    def _send_when_loaded(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                # The app's lifespan started loading in a task; it runs while this waits.
                while not self.state.ready and self.state.load_error is None:
                    await asyncio.sleep(LOAD_POLL_S)
                if self.state.load_error is not None:
                    message = {"type": "lifespan.startup.failed", "message": self.state.load_error}
            await send(message)

        return wrapped

    def _send_with_replica(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return wrapped


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000, logging_config=QUIET)
class MetricsBoard:
    """The latest metrics text of each replica (one small actor per application)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, tuple[float, str]] = {}

    def put(self, replica: str, text: str) -> None:
        self.snapshots[replica] = (time.monotonic(), text)

    def merged(self, replica: str, text: str) -> str:
        """`text` as `replica`'s latest, then the sum over every replica heard from recently."""
        self.put(replica, text)
        now = time.monotonic()
        self.snapshots = {k: v for k, v in self.snapshots.items() if now - v[0] <= METRICS_STALE_S}
        return merge_metrics(text for _, text in self.snapshots.values())


@serve.deployment(name=REPLICA_DEPLOYMENT, logging_config=QUIET)
@serve.ingress()
class RewardReplica:
    """One replica: the service app built from `settings`, its metrics shared through `board`."""

    def __init__(self, settings: ServiceSettings, board: DeploymentHandle) -> None:
        self.settings = settings
        self.board = board
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.state: ServiceState | None = None
        self.pusher: asyncio.Task[None] | None = None

    async def __serve_build_asgi_app__(self) -> ASGIApp:
        app = create_app(self.settings)
        state: ServiceState = app.state.service
        self.state = state
        # Ahead of the app's own /metrics route (first match wins), behind all its middleware.
        app.router.routes.insert(0, APIRoute("/metrics", self.metrics, methods=["GET"], response_class=Response,
                                             include_in_schema=False))
        self.pusher = asyncio.create_task(self._push_metrics(), name="tlcr-metrics-push")
        return ReplicaApp(app, state, self.replica)

    def _own_metrics(self) -> str:
        assert self.state is not None
        return self.state.metrics.render().decode()

    async def _push_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_PUSH_S)
            if self.state is None or not self.state.ready:  # counted once it can score
                continue
            try:
                await asyncio.wait_for(self.board.put.remote(self.replica, self._own_metrics()),
                                       METRICS_CALL_TIMEOUT_S)
            except Exception as exc:  # the board is being replaced: the next push restores this replica
                logger.warning("metrics push failed: %s: %s", type(exc).__name__, exc)

    async def metrics(self) -> Response:
        """Prometheus text: the sum over the deployment's ready replicas (tlcr_replicas_reporting of them)."""
        own = self._own_metrics()
        try:
            text = await asyncio.wait_for(self.board.merged.remote(self.replica, own), METRICS_CALL_TIMEOUT_S)
        except Exception as exc:
            logger.warning("metrics board unreachable (%s): answering this replica's metrics only", exc)
            text = merge_metrics([own])
        assert self.state is not None
        return Response(text, media_type=self.state.metrics.content_type)

    def check_health(self) -> None:
        """Ray calls this periodically; raising makes Ray replace the replica."""
        if self.state is not None and self.state.load_error is not None:
            raise RuntimeError(self.state.load_error)


def build(settings: RayServeSettings) -> serve.Application:
    """The application: `settings.replicas` (or autoscaled) replicas of the service, and the metrics board."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
        "max_ongoing_requests": settings.max_ongoing_requests,
        "health_check_period_s": settings.health_check_period_s,
        "graceful_shutdown_timeout_s": settings.graceful_timeout_s,
    }
    if settings.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
            "initial_replicas": settings.replicas, "target_ongoing_requests": settings.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = settings.replicas
    return RewardReplica.options(**options).bind(settings.service_settings(), MetricsBoard.bind())


def app_builder(args: dict[str, Any]) -> serve.Application:
    """For `serve run` / `serve deploy` config files: `args` are `tlcr serve-ray`'s options by field name
    (model, replicas, gpus_per_replica, ...); TLCR_* environment variables fill the rest."""
    return build(RayServeSettings(**args))



def run(settings: RayServeSettings, verbosity: int | None = None) -> ExitCode:
    """Deploy the application (on a local Ray, or the cluster at --address) and serve until SIGINT/SIGTERM;
    then delete the application (and stop the local Ray). FAILURE if the deployment could not start."""
    import ray

    setup_logging(verbosity_of_level(settings.log_level) if verbosity is None else verbosity)
    local = settings.address is None
    ray.init(address=settings.address, num_cpus=settings.num_cpus if local else None, include_dashboard=False,
             logging_level=package_level(verbosity_of_level(settings.log_level)))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    deployed = False
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build(settings), name=settings.app_name, route_prefix="/", blocking=False)
        deployed = True
        logger.info("ready: %s replica(s) of %s behind Ray Serve at http://%s:%d", settings.replicas,
                    settings.served_model_name, settings.host, settings.port)
        stop.wait()
        logger.info("stopping: deleting the application %r", settings.app_name)
        return ExitCode.OK
    except Exception as exc:  # Ray reports a deployment that cannot start (e.g. a model that fails to load)
        logger.error("Ray Serve deployment failed: %s: %s", type(exc).__name__, exc)
        return ExitCode.FAILURE
    finally:
        if deployed or local:
            try:
                serve.delete(settings.app_name)
            except Exception as exc:  # the application never got deployed
                logger.debug("serve.delete: %s", exc)
        if local:
            serve.shutdown()
        ray.shutdown()
