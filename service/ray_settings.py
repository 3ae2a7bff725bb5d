"""The options of `tlcr serve-ray`: every `tlcr serve` option (ServiceSettings) plus how Ray Serve runs it.

Ray-free, so `tlcr --help` and the option parsing work where Ray is not installed; tlcr.service.ray_app
imports Ray and uses these.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from tlcr.service.settings import ServiceSettings


class RayServeSettings(ServiceSettings):
    """ServiceSettings (host and port are the Ray Serve proxy's) plus the deployment's options."""

    address: Annotated[str | None, Field(description=(
        "Ray cluster to deploy into ('auto': the one `ray start` runs on this node, or ray://HOST:10001). "
        "Default: start a local Ray for this process, stopped with it."))] = None
    num_cpus: Annotated[int | None, Field(ge=1, description=(
        "CPUs of the local Ray this command starts (default: all); ignored with --address."))] = None
    replicas: Annotated[int, Field(ge=1, description="Replicas, each a process with the model and its batcher.")] = 1
    min_replicas: Annotated[int | None, Field(ge=0, description=(
        "With --max-replicas: autoscale between the two on ongoing requests (then --replicas is the start).") )] = None
    max_replicas: Annotated[int | None, Field(ge=1, description="Upper bound of autoscaling.")] = None
    target_ongoing_requests: Annotated[float, Field(gt=0, description=(
        "Autoscaling adds replicas when ongoing requests per replica exceed this."))] = 32.0
    max_ongoing_requests: Annotated[int, Field(ge=1, description=(
        "Requests one replica takes at once (Ray Serve's default of 5 would starve the dynamic batcher); the "
        "proxy queues the rest."))] = 256
    gpus_per_replica: Annotated[float, Field(ge=0, description="GPUs reserved per replica (0: CPU).")] = 0.0
    cpus_per_replica: Annotated[float, Field(ge=0, description="CPUs reserved per replica.")] = 1.0
    health_check_period_s: Annotated[float, Field(gt=0, description=(
        "How often Ray checks each replica (a replica whose model failed to load is replaced)."))] = 2.0
    app_name: Annotated[str, Field(description="Ray Serve application name.")] = "tlcr"

    @model_validator(mode="after")
    def _autoscaling_bounds(self) -> RayServeSettings:
        for name in ("fd", "parent_pid"):  # process options of `tlcr serve`: Ray owns the replicas' processes
            if getattr(self, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} is an option of `tlcr serve` only")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both --min-replicas and --max-replicas")
        if self.min_replicas is not None and self.max_replicas is not None:
            if self.min_replicas > self.max_replicas:
                raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
            if not self.min_replicas <= self.replicas <= self.max_replicas:
                raise ValueError(f"replicas ({self.replicas}) must lie between min_replicas ({self.min_replicas}) "
                                 f"and max_replicas ({self.max_replicas}) when autoscaling")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    def service_settings(self) -> ServiceSettings:
        """What each replica's app is built from: the ServiceSettings fields only."""
        return ServiceSettings.model_validate(
            {name: getattr(self, name) for name in ServiceSettings.model_fields})
