"""The IPC door against hostile input, end to end: a real ``hfd serve`` (one tiny embedding
model) and raw DEALER sockets sending what no client library would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from support.daemon import Daemon, start_daemon
from support.models import tiny_bert

from hfd.client.protocol import Reply, Request, decode_reply, encode_request

pytestmark = pytest.mark.timeout(300)

EMBED = "emb"
HEADER_BYTES = 8 * 1024 * 1024  # the [ipc] max_header_bytes default
HEADER_ITEMS = 256 * 1024  # the [ipc] max_header_items default


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("hostile"), {EMBED: tiny_bert()}, args=["--engine", "torch"])
    try:
        yield d
    finally:
        code = d.stop()
        assert code == 0, "\n".join(d.output[-40:])


class Peer:
    """A raw DEALER on the daemon's socket."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def request(self, rid: str, op: str, body: dict[str, Any] | None = None) -> None:
        self.send(encode_request(Request(id=rid, op=op, body=body or {})))

    def reply(self, timeout: float = 30.0) -> Reply:
        assert self.sock.poll(int(timeout * 1000)), "no reply"
        return decode_reply(self.sock.recv_multipart())

    def replies_until(self, rid: str, timeout: float = 30.0) -> list[Reply]:
        """Every reply up to and including the final one of ``rid``."""
        out: list[Reply] = []
        while True:
            r = self.reply(timeout)
            out.append(r)
            if r.id == rid and r.final:
                return out

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def peer(daemon: Daemon) -> Iterator[Peer]:
    p = Peer(daemon.ipc)
    yield p
    p.close()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def assert_serving(peer: Peer, rid: str = "ping") -> None:
    peer.request(rid, "health")
    replies = peer.replies_until(rid)
    assert replies[-1].kind == "result" and replies[-1].body["status"] == "ok"


def _array32(count: int, items: bytes) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big") + items


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_msgpack_bombs_are_refused_without_growing_the_daemon(daemon: Daemon, peer: Peer) -> None:
    assert_serving(peer, "warm")
    before = peak_rss_kib(daemon.proc.pid)
    bombs = [
        # The probe's bomb: 16 M empty maps in one 16 MiB header (1.2 GiB decoded).
        _array32(16 * 1024 * 1024 - 5, b"\x80" * (16 * 1024 * 1024 - 5)),
        # Just under the header bound: 8 M empty maps in arrays of 256 Ki (each container is
        # within a per-container bound; only the count of all of them stops it).
        b"\xdc\x00\x1f" + _array32(HEADER_ITEMS, b"\x80" * HEADER_ITEMS) * 31,
        # Empty lists and two-letter strings, a valid request header around them.
        b"\x84\xa1v\x01\xa2id\xa1x\xa2op\xa6health\xa4body\x81\xa1x"
        + _array32(2 * 1024 * 1024, b"\x90\xa2ab" * 1024 * 1024),
    ]
    for bomb in bombs:
        assert len(bomb) <= 16 * 1024 * 1024
        for _ in range(2):
            peer.send([bomb])
        assert_serving(peer)
    grown_mib = (peak_rss_kib(daemon.proc.pid) - before) / 1024
    # Decoded in full, any of these is 0.5-1.2 GiB. Refused early, what is left is ZeroMQ's
    # and pyzmq's copies of the frames in flight.
    assert grown_mib < 160, f"the daemon's peak RSS grew by {grown_mib:.0f} MiB"
    assert any("dropping an unreadable IPC message" in line for line in daemon.output)


def test_a_large_legitimate_header_is_served(peer: Peer) -> None:
    """The bounds leave room for real requests: megabytes of prompt text, 100 000 inputs
    (unknown body fields are ignored, so ``health`` answers whatever else the body holds)."""
    body = {"prompt": "word " * (1024 * 1024), "input": ["a sentence"] * 100_000}
    frames = encode_request(Request(id="big", op="health", body=body))
    assert len(frames[0]) > 5 * 1024 * 1024
    peer.send(frames)
    reply = peer.replies_until("big")[-1]
    assert reply.kind == "result" and reply.body["status"] == "ok"
