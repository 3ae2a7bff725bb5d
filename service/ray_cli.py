"""`tlcr serve-ray`: the reward service as a Ray Serve application (tlcr.service.ray_app; docs/deploy.md).

Its options are every `tlcr serve` option plus the deployment's (tlcr.service.ray_settings); Ray is imported
only when the command runs, so the command line works (and says what to install) where Ray is absent.
"""

from __future__ import annotations

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.logs import VERBOSITY_KEY
from tlcr.service.ray_settings import RayServeSettings


def serve_ray(ctx: typer.Context, config: RayServeSettings) -> None:
    """Serve token rewards from replicas on a Ray cluster, behind Ray Serve's HTTP proxy (--host, --port).

    The same routes and options as `tlcr serve`, plus --replicas (or --min-replicas/--max-replicas to
    autoscale), --gpus-per-replica and --address (an existing cluster; default: a local Ray). A replica
    that dies is replaced by Ray; /metrics sums every live replica's metrics.
    """
    from tlcr.service.ray_app import run

    raise typer.Exit(run(config, ctx.meta.get(VERBOSITY_KEY)))


serve_ray_command = config_command(RayServeSettings)(serve_ray)


def register(app: typer.Typer) -> None:
    app.command("serve-ray")(serve_ray_command)
