"""The HTTP server's life: listening when it says so (TCP port 0 or a unix socket), and
``shutdown()`` ending ``serve()`` with the socket released."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import http_door
from support.http_door import serving

from hfd.daemon.settings import Settings


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    return http_door.make_settings(tmp_path, **{"usage_enabled": True, **changes})


@contextmanager
def running(settings: Settings) -> Iterator[str]:
    with serving(settings) as (address, _):
        yield address


def test_port_zero_gives_a_listening_address_that_is_released_after_shutdown(tmp_path: Path) -> None:
    with running(make_settings(tmp_path)) as address:
        assert address.startswith("http://127.0.0.1:")
        port = int(address.rsplit(":", 1)[1])
        assert port > 0
        # Listening when reported: the first request needs no retry.
        assert httpx.get(address + "/health", timeout=10).json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError):
        httpx.get(address + "/health", timeout=2)


def test_a_busy_port_is_an_error_at_start(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        settings = make_settings(tmp_path, http_port=taken.getsockname()[1])
        with pytest.raises(OSError), running(settings):
            pass
    finally:
        taken.close()


def test_unix_socket(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="hfd-h"))
    try:
        path = short / "http.sock"
        settings = make_settings(tmp_path, http_unix_socket=path, ipc_mode=0o660)
        with running(settings) as address:
            assert address == f"unix:{path}"
            assert path.stat().st_mode & 0o777 == 0o660
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://hfd") as client:
                assert client.get("/v1/models").json() == {"object": "list", "data": []}
        assert not path.exists()
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_tcp_listener_is_marked_tcp_so_asyncio_disables_nagle(tmp_path: Path) -> None:
    # asyncio turns on TCP_NODELAY only for sockets whose proto is IPPROTO_TCP; without it each
    # keep-alive response stalls on Nagle's algorithm and the client's delayed ACK.
    from hfd.daemon.http.server import bind_socket

    sock, _ = bind_socket(make_settings(tmp_path))
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
