"""The HTTP door's server: uvicorn on a socket bound here, inside the daemon's task group.

The socket is bound and listening before uvicorn starts, so the address (with the port the
OS picked for port 0) is known and connectable when ``serve()`` reports it. Signals belong to
the daemon's lifecycle, not to uvicorn: ``shutdown()`` is how it stops. In-flight requests then
get ``grace_period`` seconds (uvicorn's ``timeout_graceful_shutdown``) before they are
cancelled.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import uvicorn

from hfd.daemon.http.app import create_app
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings

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


def _claim_unix_path(path: Path) -> None:
    """Remove a stale socket file; refuse to take over one a live server listens on."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")


def bind_socket(settings: Settings) -> tuple[socket.socket, str]:
    """A listening socket for the HTTP door and the address to announce."""
    if settings.http_unix_socket is not None:
        path = settings.http_unix_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        _claim_unix_path(path)
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
    return sock, f"http://{shown}:{port}"


class HttpServer:
    def __init__(self, service: Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.address: str | None = None
        self._server: _Uvicorn | None = None
        self._stop_requested = False

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            create_app(self.service, self.settings),
            lifespan="off",
            log_config=None,  # the daemon configured logging already
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ws="none",
            # uvicorn waits with asyncio.wait_for, which takes fractions of a second too.
            timeout_graceful_shutdown=self.settings.grace_period,  # type: ignore[arg-type]
            timeout_keep_alive=5,
        )

    async def serve(self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        sock, address = bind_socket(self.settings)
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
            sock.close()
            if self.settings.http_unix_socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.settings.http_unix_socket.unlink()

    def shutdown(self) -> None:
        """Stop accepting; in-flight requests get the grace period; then ``serve()`` returns."""
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True
