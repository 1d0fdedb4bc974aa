"""The daemon's lifecycle: build the core once, start both doors in one task group, say
"ready" only when both listen, and shut down gracefully on SIGTERM/SIGINT. SIGHUP asks the
doors to re-read what can change under them (the HTTP door's TLS certificate).

At start-up the soft open-file limit is raised to the hard one: a terminal's default of 1024
descriptors is a few hundred slow clients away from a door that cannot accept.

``Daemon`` is the composition root: it builds the store, the model manager, the response
cache, the metrics, access control, the service and the doors once, in that order, and passes
each to what needs it. Nothing looks another object up: one daemon has one ``ModelStore`` (one
single-flight table for pulls and loads), one ``Access``, one metrics view of its models.

Shutdown order: stop accepting on both doors; in-flight requests get ``grace_period``
seconds to finish (the doors' ``serve()`` return when they are done); then models unload
and the IPC socket file is removed. Exit status 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Protocol

import anyio
import anyio.abc

from hfd import __version__
from hfd.daemon.access.control import Access
from hfd.daemon.cache import ResponseCache
from hfd.daemon.http.tls import check_plaintext
from hfd.daemon.metrics import METRICS, Metrics
from hfd.daemon.models.exporting import start_importing, stop_importing
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.notify import Notifier, watchdog_interval
from hfd.daemon.pulls import Pulls
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings
from hfd.daemon.store import ModelStore, resolver

log = logging.getLogger(__name__)


def prepare_dirs(settings: Settings) -> None:
    for path, mode in (
        (settings.state_dir, 0o750),
        (settings.cache_dir, 0o750),
        (settings.runtime_dir, 0o700),
    ):
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    settings.ipc_socket().parent.mkdir(parents=True, exist_ok=True, mode=0o700)


class Door(Protocol):
    """What the lifecycle needs of a door (``IpcServer``, ``HttpServer``)."""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[str] = ...) -> None: ...

    def shutdown(self) -> None: ...


class Daemon:
    """One daemon process. ``run()`` returns when the daemon has shut down.

    ``metrics``: the process's metrics by default (the store and the schedulers record their
    events there); one ``Metrics`` watches one daemon's models.
    """

    def __init__(
        self, settings: Settings, *, notifier: Notifier | None = None, metrics: Metrics = METRICS
    ) -> None:
        from hfd.daemon.zmq.server import IpcServer

        self.settings = settings
        self.notifier = notifier or Notifier()
        self.store = ModelStore(settings)
        self.manager = ModelManager(settings, resolve=resolver(settings, self.store))
        self.cache = ResponseCache.from_settings(settings)
        self.metrics = metrics
        metrics.watch(self.manager, self.cache)
        self.access = Access(settings, metrics)
        self.service = Service(
            settings,
            self.manager,
            cache=self.cache,
            pulls=Pulls(settings, self.store, self.manager.export, self.manager.measure),
        )
        self.doors: dict[str, Door] = {"ipc": IpcServer(self.service, settings, access=self.access)}
        if settings.http_enabled:
            from hfd.daemon.http.server import HttpServer  # uvicorn only where HTTP is served

            self.doors["http"] = HttpServer(self.service, settings, access=self.access)
        self.addresses: dict[str, str] = {}
        self._stop = anyio.Event()
        self._servers: list[tuple[Door, anyio.Event]] = []

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        prepare_dirs(s)
        check_plaintext(s)  # no API keys in clear text beyond loopback
        access = self.access
        access.check_startup()  # refuse what must not serve: keys required but none, bad CURVE keys
        servers: list[tuple[Door, anyio.Event]] = []

        async def door(server: Door, *, task_status: anyio.abc.TaskStatus[str]) -> None:
            finished = anyio.Event()
            servers.append((server, finished))
            try:
                await server.serve(task_status=task_status)
            finally:
                finished.set()

        self._servers = servers
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._signals, tg.cancel_scope)
            await tg.start(self.manager.run)
            await tg.start(access.run)  # the usage log's writer; flushed when the group ends
            if s.store_scrub_interval > 0:  # re-hash stored blobs slowly in the background
                from hfd.daemon.store.scrub import scrub_loop

                tg.start_soon(scrub_loop, s)
            for name, server in self.doors.items():
                self.addresses[name] = await tg.start(door, server)
            await self.manager.preload()
            self._announce_ready()
            if s.models:  # transformers' import (seconds) off the first request's path
                start_importing(s, self.store, [m.spec.public_name for m in self.manager.loaded()])
            interval = watchdog_interval()
            if interval:
                tg.start_soon(self._watchdog, interval)

            await self._stop.wait()
            log.info("shutting down", extra={"grace_period": s.grace_period})
            self.notifier.stopping()
            access.mark_stopping()
            for server, _ in servers:
                server.shutdown()
            # The doors return once in-flight work finished or the grace period ran out;
            # a second bound keeps a stuck door from holding the process forever.
            with anyio.move_on_after(s.grace_period + 5.0):
                for _, finished in servers:
                    await finished.wait()
            await self.manager.aclose(grace=0.0)
            await anyio.to_thread.run_sync(stop_importing)  # the spare engine process no load took
            tg.cancel_scope.cancel()
        _remove(s.ipc_socket())
        log.info("stopped")

    def _announce_ready(self) -> None:
        parts = " ".join(f"{k}={v}" for k, v in sorted(self.addresses.items()))
        # The ready line on stdout is what scripts and tests wait for.
        sys.stdout.write(f"hfd ready {parts}\n")
        sys.stdout.flush()
        log.info("ready", extra={"version": __version__, "pid": os.getpid(), **self.addresses})
        self.notifier.ready(f"serving {parts}")
        self.access.mark_ready()

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("signal received: reloading", extra={"signal": "SIGHUP"})
                    for server, _ in self._servers:
                        reload = getattr(server, "reload", None)
                        if reload is not None:
                            reload()
                    continue
                if self._stop.is_set():
                    log.warning("second signal: stopping now", extra={"signal": signum})
                    scope.cancel()
                    return
                log.info("signal received", extra={"signal": signal.Signals(signum).name})
                self._stop.set()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)


def _remove(path: os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the (soft, hard) now in force, logged
    with the soft limit found. None where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        # macOS reports an unlimited hard limit but refuses a soft one above OPEN_MAX.
        target = max(soft, 1 << 20) if sys.platform.startswith("linux") else max(soft, 10240)
    new = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            new = target
        except (OSError, ValueError) as exc:
            log.warning(
                "cannot raise the open-file limit", extra={"soft": soft, "hard": hard, "error": str(exc)}
            )
    log.info("open-file limit", extra={"nofile_soft_was": soft, "nofile_soft": new, "nofile_hard": hard})
    return new, hard


def serve(settings: Settings) -> int:
    raise_open_file_limit()
    daemon = Daemon(settings)
    anyio.run(daemon.run, backend="asyncio")
    return 0
