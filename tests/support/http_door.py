"""The HTTP door alone, served in-process on a real socket: ``HttpServer`` over a ``Service``
with no models, in a thread of its own (an anyio blocking portal), for tests that talk to it
with real sockets and clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from hfd.daemon.http.server import HttpServer
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings, load_settings, with_overrides
from support.doors import door_in_thread


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
    with door_in_thread(lambda: HttpServer(Service(settings, ModelManager(settings)), settings)) as (
        server,
        address,
        _,
    ):
        yield address, server


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
