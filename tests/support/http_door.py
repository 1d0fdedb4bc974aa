"""The HTTP door alone, served in-process on a real socket: ``HttpServer`` over a ``Service``
with no models, in a thread of its own (an anyio blocking portal), for tests that talk to it
with real sockets and clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx

from hfd.daemon.http.server import HttpServer
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings, load_settings, with_overrides


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    base = load_settings(
        environ={
            "HFD_STATE_DIR": str(tmp_path / "state"),
            "HFD_CACHE_DIR": str(tmp_path / "cache"),
            "HFD_RUNTIME_DIR": str(tmp_path / "run"),
        }
    )
    return with_overrides(base, **{"http_port": 0, "grace_period": 1.0, "usage_enabled": False, **changes})


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[str, HttpServer]]:
    """``(address, server)`` while the door listens; stopped (socket released) afterwards."""
    with anyio.from_thread.start_blocking_portal() as portal:

        async def build() -> HttpServer:
            return HttpServer(Service(settings, ModelManager(settings)), settings)

        server = portal.call(build)
        future, address = portal.start_task(server.serve)
        try:
            yield address, server
        finally:
            portal.call(server.shutdown)
            future.result(timeout=15)


def host_port(address: str) -> tuple[str, int]:
    m = re.match(r"^https?://([^:]+):(\d+)$", address)
    assert m, address
    return m.group(1), int(m.group(2))


def in_flight(address: str, **kwargs: Any) -> float:
    """``hfd_requests_in_flight{door="http"}`` as /metrics reports it (this scrape included)."""
    text = httpx.get(address + "/metrics", timeout=10, **kwargs).text
    for line in text.splitlines():
        if line.startswith('hfd_requests_in_flight{door="http"}'):
            return float(line.split()[-1])
    return 0.0
