"""hfd as a Ray Serve application: one deployment per configured model (``ModelReplica``),
and an ingress (``Ingress``) serving the HTTP API in front of them.

Two ways to start it:

- ``hfd serve --ray ADDRESS [--ray-replicas MIN:MAX ...]``: :func:`deploy` connects to the
  cluster, deploys the app and waits until it is stopped (SIGTERM/SIGINT remove it);
- ``serve run hfd.daemon.fleet.ray_app:build config_file=/etc/hfd/config.toml max_replicas=4``:
  :func:`build` is a Ray Serve application builder (``serve run``, a Serve config file,
  KubeRay's ``RayService``).

Resources and autoscaling come from ``hfd.daemon.fleet.plan``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from hfd.daemon.fleet.ingress import ingress_app
from hfd.daemon.fleet.plan import FleetOptions, deployment_options, node_settings
from hfd.daemon.fleet.replica import ModelReplica
from hfd.daemon.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

APP_NAME = "hfd"
INGRESS_NAME = "hfd-ingress"


def hub_handle() -> Any:
    """The metrics hub actor (made by whoever asks first; it lives as long as the cluster)."""
    import ray

    from hfd.daemon.fleet.metrics_hub import HUB_NAME, NAMESPACE, MetricsHub

    actor = ray.remote(MetricsHub).options(
        name=HUB_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0
    )
    return actor.remote()


class Ingress:
    """The ingress deployment's callable; its ASGI app is built on the replica."""

    def __init__(self, base: Settings, handles: dict[str, Any]) -> None:
        self.settings = node_settings(base, os.environ)
        self.handles = handles

    async def __serve_build_asgi_app__(self) -> Any:
        app, self.access = ingress_app(self.settings, self.handles, _quiet(hub_handle))
        self.access.start()
        self.access.mark_ready()
        return app

    def __del__(self) -> None:
        access = getattr(self, "access", None)
        if access is not None:
            access.close()


class ServedReplica(ModelReplica):
    async def __init__(self, base: Settings, model: str) -> None:  # type: ignore[misc]
        await super().__init__(base, model, hub=_quiet(hub_handle))


def _quiet(make: Any) -> Any:
    try:
        return make()
    except Exception as exc:  # no hub: /metrics on the ingress is then not served
        log.warning("no metrics hub", extra={"error": str(exc)})
        return None


def application(settings: Settings, options: FleetOptions) -> Application:
    """The bound application: a deployment per model, the ingress in front."""
    if not settings.models:
        raise SettingsError("no models configured: the Ray app serves the [[models]] of the config file")
    replica: Any = serve.deployment(ServedReplica)
    handles = {
        spec.public_name: replica.options(**deployment_options(settings, spec, options)).bind(
            settings, spec.public_name
        )
        for spec in settings.models
    }
    ingress: Any = serve.deployment(serve.ingress()(Ingress))
    ingress = ingress.options(name=INGRESS_NAME, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
    return ingress.bind(settings, handles)


def build(args: dict[str, Any]) -> Application:
    """The ``serve run`` builder: ``config_file=PATH`` (hfd's TOML) and any
    :class:`FleetOptions` field (``min_replicas=1 max_replicas=4 ...``)."""
    args = dict(args)
    config = args.pop("config_file", None)
    settings = load_settings(config_file=Path(config) if config else None)
    types = FleetOptions.__dataclass_fields__
    typed: dict[str, Any] = {}
    for key, value in args.items():
        if key not in types:
            raise SettingsError(f"unknown argument {key!r}; use config_file= or one of {', '.join(types)}")
        typed[key] = _coerce(str(types[key].type), value)
    return application(settings, FleetOptions(**typed))


def _coerce(kind: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.lower() in ("none", ""):
        return None
    if "bool" in kind:
        return value.lower() in ("1", "true", "yes", "on")
    if "float" in kind:
        return float(value)
    if "int" in kind:
        return int(value)
    return value


def deploy(
    settings: Settings,
    address: str,
    options: FleetOptions,
    *,
    host: str | None = None,
    port: int | None = None,
) -> int:
    """``hfd serve --ray ADDRESS``: deploy on the cluster, print the ready line, and remove the
    app on SIGTERM/SIGINT."""
    import ray

    ray.init(address=address, namespace="hfd")  # replica logs (a failed load) show here
    http = {"host": host or settings.http_host, "port": port if port is not None else settings.http_port}
    # The HTTP proxy on the head node: it outlives any worker node.
    serve.start(proxy_location="HeadOnly", http_options=http)
    serve.run(application(settings, options), name=APP_NAME, route_prefix="/", blocking=False)
    print(f"hfd ready ray={address} http=http://{http['host']}:{http['port']}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.delete(APP_NAME)
    if not serve.status().applications:  # Serve was ours alone: its proxy goes too, and the
        serve.shutdown()  # next deploy binds the port it is given
    ray.shutdown()
    return 0
