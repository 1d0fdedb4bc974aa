"""Streaming a large ``cat`` body into a consumer at close to wire speed, on worker threads.

The async httpx client costs about 1.7x the CPU of ``curl`` per byte here (it reads 64 KiB at a
time through the event loop and re-chunks), and on a small box the pull shares its cores with
the IPFS node. File bodies therefore travel over a plain blocking ``http.client`` connection:
one thread ``readinto``s 1 MiB buffers (chunked decoding included), a second thread hands them
to the consumer (which hashes and writes), so receiving overlaps hashing and writing, with a few
buffers recycled between them. Everything else (small JSON calls) stays on the async client.
"""

from __future__ import annotations

import http.client
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Final
from urllib.parse import quote, urlencode, urlsplit

from hfd.ipfs.errors import api_error, failed, unreachable
from hfd.ipfs.multiaddr import ApiAddress

BUFFER_BYTES: Final = 1 << 20
BUFFERS: Final = 16


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._uds = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._uds)
        self.sock = sock


def _connection(
    address: ApiAddress, connect_timeout: float, tls: ssl.SSLContext
) -> http.client.HTTPConnection:
    if address.uds:
        return _UnixConnection(address.uds, connect_timeout)
    parts = urlsplit(address.base_url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=connect_timeout, context=tls
        )
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=connect_timeout)


def stream_post(
    address: ApiAddress,
    cmd: str,
    params: list[tuple[str, str]],
    consume: Callable[[memoryview], object],
    *,
    headers: Mapping[str, str],
    connect_timeout: float,
    read_timeout: float,
    tls: ssl.SSLContext,
    api: str,
) -> int:
    """POST ``/api/v0/<cmd>?params`` and feed the body to ``consume``; returns the bytes read.

    ``consume`` runs on a second thread; an exception it raises stops the transfer and is raised
    here. Node errors become FetchError like the async client's.
    """
    prefix = urlsplit(address.base_url).path
    target = f"{prefix}/api/v0/{cmd}?{urlencode(params, quote_via=quote)}"
    conn = _connection(address, connect_timeout, tls)
    try:
        try:
            conn.connect()
        except OSError as exc:
            raise unreachable(api, exc) from exc
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        try:
            conn.request("POST", target, headers={**headers, "Content-Length": "0"})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise failed(cmd, repr(exc)) from exc
        if response.status >= 400:
            raise api_error(cmd, response.status, response.read(64 * 1024))
        return _pump(response, consume, cmd)
    finally:
        conn.close()


def _pump(response: http.client.HTTPResponse, consume: Callable[[memoryview], object], cmd: str) -> int:
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(BUFFER_BYTES))
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    errors: list[BaseException] = []

    def drain() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            if not errors:
                try:
                    consume(memoryview(buf)[:n])
                except BaseException as exc:
                    errors.append(exc)
            free.put(buf)

    consumer = threading.Thread(target=drain, name="ipfs-cat-consumer", daemon=True)
    consumer.start()
    total = 0
    try:
        while not errors:
            buf = free.get()
            try:
                n = response.readinto(buf)
            except (OSError, http.client.HTTPException) as exc:
                raise failed(cmd, f"mid-stream after {total} bytes: {exc!r}") from exc
            if not n:
                break
            total += n
            full.put((buf, n))
    finally:
        full.put(None)
        consumer.join()
    if errors:
        raise errors[0]
    return total
