"""The HTTP door's server: uvicorn on a socket bound here, inside the daemon's task group.

The socket is bound and listening before uvicorn starts, so the address (with the port the
OS picked for port 0) is known and connectable when ``serve()`` reports it. Signals belong to
the daemon's lifecycle, not to uvicorn: ``shutdown()`` is how it stops. In-flight requests then
get ``grace_period`` seconds (uvicorn's ``timeout_graceful_shutdown``) before they are
cancelled.

Connections are uvicorn's h11 protocol with the guards of ``hfd.daemon.http.conn`` (header
timeout, connection cap, drop logging); the cap is lowered to fit the process's open-file
limit, so the door refuses with 503 before accept() runs out of descriptors. With
``http_tls_cert`` the door serves HTTPS from a context built here (``reload()``, on SIGHUP,
re-reads the certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import anyio
import anyio.abc
import uvicorn

from hfd.daemon.access.control import Access
from hfd.daemon.http.app import create_app
from hfd.daemon.http.conn import AcceptErrors, GuardedProtocol
from hfd.daemon.http.tls import TlsConfig, tls_config
from hfd.daemon.metrics import Metrics
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings
from hfd.daemon.unix_paths import claim_socket_path

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    ready: anyio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.ready is not None:
            self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon's lifecycle owns SIGTERM/SIGINT and calls HttpServer.shutdown().
        yield


def bind_socket(settings: Settings) -> tuple[socket.socket, str]:
    """A listening socket for the HTTP door and the address to announce."""
    if settings.http_unix_socket is not None:
        path = settings.http_unix_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        claim_socket_path(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, settings.ipc_mode)
        sock.listen(2048)
        return sock, f"unix:{path}"
    host = settings.http_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, settings.http_port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    scheme = "https" if settings.http_tls_cert is not None else "http"
    return sock, f"{scheme}://{shown}:{port}"


def connection_cap(settings: Settings) -> int:
    """``http_max_connections``, lowered to leave room under the open-file limit for the
    models, the store and the IPC door (each connection is a descriptor)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return settings.http_max_connections
    if soft == resource.RLIM_INFINITY:
        return settings.http_max_connections
    room = max(16, soft - max(128, soft // 8))
    if room < settings.http_max_connections:
        log.warning(
            "http_max_connections lowered to fit the open-file limit",
            extra={"http_max_connections": settings.http_max_connections, "cap": room, "nofile_soft": soft},
        )
        return room
    return settings.http_max_connections


class HttpServer:
    def __init__(self, service: Service, settings: Settings, *, access: Access | None = None) -> None:
        self.service = service
        # The daemon's one Access (hfd.daemon.app); a door served alone (tests) gets its own.
        self.access = access if access is not None else Access(settings, Metrics())
        self.settings = settings
        self.address: str | None = None
        self._server: _Uvicorn | None = None
        self._stop_requested = False
        self.tls: TlsConfig | None = None

    def _config(self) -> uvicorn.Config:
        s = self.settings
        tls = self.tls
        protocol = GuardedProtocol.configure(
            header_timeout=s.http_header_timeout, max_connections=connection_cap(s)
        )
        return uvicorn.Config(
            create_app(self.service, s, self.access),
            lifespan="off",
            log_config=None,  # the daemon configured logging already
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ws="none",
            http=protocol,
            # uvicorn waits with asyncio.wait_for, which takes fractions of a second too.
            timeout_graceful_shutdown=s.grace_period,  # type: ignore[arg-type]
            # Longer than clients keep idle pooled connections (httpx 5 s, aiohttp 15 s, Go's
            # net/http 90 s): a server that closes an idle connection first races a client
            # reusing it, and that request is lost with no answer. Idle connections cost a
            # descriptor each and are the first reclaimed at the cap. See docs/operations.md.
            timeout_keep_alive=s.http_keep_alive_timeout,  # type: ignore[arg-type]
            ssl_context_factory=(lambda config, default: tls.context) if tls is not None else None,
        )

    def reload(self) -> None:
        """SIGHUP: re-read what can change under a running door (the TLS certificate)."""
        if self.tls is not None:
            self.tls.reload()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        self.tls = tls_config(self.settings)  # a bad certificate fails here, before binding
        sock, address = bind_socket(self.settings)
        accept_errors = AcceptErrors()
        accept_errors.install(asyncio.get_running_loop())
        server = _Uvicorn(self._config())
        ready = server.ready = anyio.Event()
        self._server = server
        server.should_exit = self._stop_requested

        async def run() -> None:
            try:
                await server.serve(sockets=[sock])
            finally:
                ready.set()  # also when it never started: the wait below must end

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await ready.wait()
                if not server.started and not self._stop_requested:
                    raise OSError(f"the HTTP server did not start on {address}")
                self.address = address
                log.info("http listening", extra={"address": address})
                # Also when shutdown() came first: the caller waits for this either way.
                task_status.started(address)
        finally:
            accept_errors.uninstall()
            sock.close()
            if self.settings.http_unix_socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.settings.http_unix_socket.unlink()

    def shutdown(self) -> None:
        """Stop accepting; in-flight requests get the grace period; then ``serve()`` returns."""
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True
