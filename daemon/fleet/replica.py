"""One replica of one model on a Ray Serve cluster: hfd's own core for that model.

The replica builds what ``hfd serve`` builds (``hfd.daemon.app.Daemon``: the node's store,
the model manager, its scheduler and engine, the response cache, metrics, access control,
the service) with the settings the app was deployed with, except for what belongs to the node
it runs on: the state, cache and runtime directories and the IPFS node (``HFD_STATE_DIR``,
``HFD_CACHE_DIR``, ``HFD_RUNTIME_DIR``, ``HFD_IPFS_API`` in the environment ``ray start`` ran
in). So weights come through the node's store, IPFS first. No door listens: requests arrive
from the ingress as :class:`~hfd.daemon.fleet.bridge.Forwarded` and run through the HTTP door's
ASGI app (``create_app``), which keeps routes, error bodies and streaming those of one box.
Batching stays here: every request a replica gets joins its one scheduler.

API keys are checked at the ingress (its node's key store); a replica serves only what the
ingress forwards, so its own key check is off. Pulling is on: a replica on a fresh node has
nothing stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio

from hfd.daemon.fleet.bridge import Forwarded, run_asgi
from hfd.daemon.fleet.plan import node_settings
from hfd.daemon.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def replica_settings(base: Settings, model: str, environ: Mapping[str, str]) -> Settings:
    """``base`` serving only ``model``, with this node's directories and IPFS node."""
    specs = [s for s in base.models if s.public_name == model]
    if not specs:
        raise SettingsError(f"model {model!r} is not configured")
    # allow_pull: a replica on a fresh node has nothing stored; its node's store pulls the
    # model (IPFS first, from the nodes that have it).
    return node_settings(
        base,
        environ,
        models=(specs[0],),
        http_enabled=False,
        auth_required="false",
        store_scrub_interval=0,
        allow_pull=True,
    )


class ModelReplica:
    """The replica's callable (``serve.deployment(ModelReplica)`` in ``ray_app``)."""

    async def __init__(self, base: Settings, model: str, hub: Any = None) -> None:  # type: ignore[misc]
        from hfd.daemon.app import Daemon, prepare_dirs
        from hfd.daemon.http.app import create_app

        settings = replica_settings(base, model, os.environ)
        prepare_dirs(settings)
        self.model = model
        self.daemon = Daemon(settings)  # the composition root; its doors are never served
        self.app = create_app(self.daemon.service, settings, self.daemon.access)
        self._hub = hub
        self._stop = anyio.Event()
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._core = asyncio.ensure_future(self._run())
        await asyncio.shield(self._started)
        # Loaded before the replica takes traffic: its weights come through this node's store.
        await self.daemon.manager.load(model)
        self.replica_id = _replica_id()
        log.info("replica ready", extra={"model": model, "replica": self.replica_id})

    async def _run(self) -> None:
        d = self.daemon
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(d.manager.run)
                await tg.start(d.access.run)
                d.access.mark_ready()
                self._started.set_result(None)
                if self._hub is not None:
                    tg.start_soon(self._push_metrics)
                await self._stop.wait()
                await d.manager.aclose(grace=0.0)
                tg.cancel_scope.cancel()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise

    async def _push_metrics(self) -> None:
        from hfd.daemon.fleet.metrics_hub import PUSH_INTERVAL

        while True:
            try:
                text = self.daemon.metrics.exposition().decode("utf-8")
                await self._hub.put.remote(f"{self.model}/{self.replica_id}", text)
            except Exception as exc:  # the hub restarting: the next push gets through
                log.debug("metrics push failed", extra={"error": str(exc)})
            await anyio.sleep(PUSH_INTERVAL)

    async def forward(self, request: Forwarded) -> AsyncIterator[dict[str, Any] | bytes]:
        """The response to ``request``: its head, then its body chunks."""
        async for part in run_asgi(self.app, request):
            yield part

    async def check_health(self) -> None:
        if self._core.done():
            raise RuntimeError(f"the model core of {self.model!r} stopped")

    async def __del__(self) -> None:
        self._stop.set()
        if self._hub is not None:
            try:
                await self._hub.drop.remote(f"{self.model}/{self.replica_id}")
            except Exception:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(self._core), timeout=10.0)
        except BaseException:
            pass


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_tag)
    except Exception:
        return str(os.getpid())
