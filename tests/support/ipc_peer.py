"""A raw DEALER on a daemon's IPC socket, for tests that send frames no client would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import zmq

from hfd.client.protocol import Reply, Request, decode_reply, encode_request


class Peer:
    """Sends any frames, reads replies; ``timeout`` is how long a reply may take by default."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def request(self, rid: str, op: str, body: dict[str, Any] | None = None) -> None:
        self.send(encode_request(Request(id=rid, op=op, body=body or {})))

    def reply(self, timeout: float | None = None) -> Reply:
        wait = self.timeout if timeout is None else timeout
        assert self.sock.poll(int(wait * 1000)), "no reply"
        return decode_reply(self.sock.recv_multipart())

    def replies_until(self, rid: str, timeout: float | None = None) -> list[Reply]:
        """Every reply up to and including the final one of ``rid``."""
        out: list[Reply] = []
        while True:
            r = self.reply(timeout)
            out.append(r)
            if r.id == rid and r.final:
                return out

    def silent(self, timeout: float = 0.3) -> bool:
        return not self.sock.poll(int(timeout * 1000))

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@contextmanager
def dealer(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    """A bare DEALER socket connected to ``endpoint`` (closed, its context ended, afterwards)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()
