"""What each model's Ray Serve deployment asks of the cluster, from hfd's own rules.

- resources: ``num_cpus`` is the model's engine thread budget (``models/threads``; a fraction
  may be given for small test clusters), ``num_gpus`` 1 for a model pinned to a GPU, ``memory`` is hfd's estimate of the loaded model
  (``models/memory``) when its files are at hand where the app is built, else nothing is
  reserved and the replica's own admission check still applies;
- autoscaling on ongoing requests per replica, between ``min_replicas`` and ``max_replicas``;
- ``keep_alive``: a model that may unload (a finite keep-alive, ``scale_to_zero`` on) gets
  ``min_replicas`` 0 and its keep-alive as the downscale delay, so Ray Serve removes its last
  replica after that long idle (its first request then waits for a replica to start); a model
  kept forever keeps at least one replica.

No Ray here: the plan is plain data, checked by unit tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfd.daemon.settings import ModelSpec, Settings, with_overrides

log = logging.getLogger(__name__)

# Settings that belong to the node a replica or the ingress runs on, read from the environment
# ``ray start`` ran in (``HFD_STATE_DIR`` ...); the rest come from the deployed settings.
NODE_PATHS = ("state_dir", "cache_dir", "runtime_dir")
NODE_STRINGS = ("ipfs_api",)


def node_settings(base: Settings, environ: Mapping[str, str], **changes: Any) -> Settings:
    """``base`` with this node's directories and IPFS node, and ``changes``."""
    local: dict[str, Any] = {}
    for name in NODE_PATHS:
        value = environ.get("HFD_" + name.upper())
        if value:
            local[name] = Path(value)
    for name in NODE_STRINGS:
        value = environ.get("HFD_" + name.upper())
        if value:
            local[name] = value
    return with_overrides(base, **local, **changes)


@dataclass(frozen=True)
class FleetOptions:
    """The scaled-out mode's knobs (``hfd serve --ray`` flags, or ``serve run`` arguments)."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0
    replica_cpus: float | None = None  # None: the model's thread budget
    max_replicas_per_node: int | None = None  # 1: spread a model's replicas over nodes
    scale_to_zero: bool = True
    max_ongoing_requests: int = 64

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError(
                f"replicas: need 0 <= min_replicas <= max_replicas and max_replicas >= 1 "
                f"(got {self.min_replicas}..{self.max_replicas})"
            )
        if self.target_ongoing_requests <= 0:
            raise ValueError("target_ongoing_requests must be > 0")
        if self.replica_cpus is not None and self.replica_cpus < 0:
            raise ValueError("replica_cpus must be >= 0")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> FleetOptions:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"unknown fleet options: {', '.join(sorted(unknown))}")
        return cls(**args)


def keep_alive_of(settings: Settings, spec: ModelSpec) -> float:
    return spec.keep_alive if spec.keep_alive is not None else settings.default_keep_alive


def memory_estimate(settings: Settings, spec: ModelSpec) -> int | None:
    """hfd's estimate of the loaded model in bytes, when its files are a local directory."""
    path = Path(spec.ref)
    if not (path / "config.json").is_file():
        return None
    from hfd.daemon.models.memory import estimate_model
    from hfd.daemon.tasks.registry import task_for

    try:
        task = task_for(spec.task, path, spec.public_name)
        estimate = estimate_model(
            path,
            task,
            max_running=spec.max_running or settings.max_running,
            context_tokens=settings.memory_context_tokens,
        )
    except Exception as exc:  # an estimate is advice: the replica checks again when it loads
        log.warning("no memory estimate", extra={"model": spec.public_name, "error": str(exc)})
        return None
    return estimate.total


def deployment_options(settings: Settings, spec: ModelSpec, options: FleetOptions) -> dict[str, Any]:
    """``Deployment.options(...)`` for one model."""
    from hfd.daemon.models.threads import engine_threads

    cpus = options.replica_cpus if options.replica_cpus is not None else engine_threads(settings, spec)
    actor: dict[str, Any] = {"num_cpus": cpus}
    if (spec.device or "").lower().startswith(("cuda", "gpu")):  # a model pinned to a GPU gets one
        actor["num_gpus"] = 1
    memory = memory_estimate(settings, spec)
    if memory:
        actor["memory"] = memory
    keep_alive = keep_alive_of(settings, spec)
    may_unload = options.scale_to_zero and keep_alive >= 0
    autoscaling: dict[str, Any] = {
        "min_replicas": 0 if may_unload else max(1, options.min_replicas),
        "initial_replicas": max(1, options.min_replicas),
        "max_replicas": options.max_replicas,
        "target_ongoing_requests": options.target_ongoing_requests,
    }
    if may_unload:
        autoscaling["downscale_delay_s"] = max(1.0, keep_alive)
    out: dict[str, Any] = {
        "name": deployment_name(spec.public_name),
        "ray_actor_options": actor,
        "autoscaling_config": autoscaling,
        "max_ongoing_requests": options.max_ongoing_requests,
    }
    if options.max_replicas_per_node is not None:
        out["max_replicas_per_node"] = options.max_replicas_per_node
    return out


def deployment_name(model: str) -> str:
    """A Ray Serve deployment name for a model's public name (Ray refuses ``#`` and ``/``)."""
    return "model-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
