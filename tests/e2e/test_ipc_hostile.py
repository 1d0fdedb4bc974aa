"""The IPC door against hostile input, end to end: a real ``hfd serve`` (one tiny embedding
model) and raw DEALER sockets sending what no client library would."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import Daemon
from support.daemon_fixtures import module_daemon
from support.ipc_peer import Peer
from support.models import tiny_bert
from support.waiting import eventually

from hfd.client.protocol import Request, encode_request

pytestmark = pytest.mark.timeout(300)

EMBED = "emb"
HEADER_BYTES = 8 * 1024 * 1024  # the [ipc] max_header_bytes default
HEADER_ITEMS = 256 * 1024  # the [ipc] max_header_items default


daemon = module_daemon({EMBED: tiny_bert}, engine="torch", workdir="hostile")


@pytest.fixture
def peer(daemon: Daemon) -> Iterator[Peer]:
    p = Peer(daemon.ipc, timeout=30.0)
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
    # A daemon with configured models imports transformers in the background once ready
    # (hfd.daemon.models.exporting): its peak RSS is measured after that import.
    assert daemon.wait_logged("background imports done", timeout=120)
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
    assert daemon.wait_logged("dropping an unreadable IPC message")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_message_of_half_a_million_empty_frames_is_discarded_frame_by_frame(
    daemon: Daemon, peer: Peer
) -> None:
    """1 MB on the wire; as Python objects (recv_multipart) it was 150 MiB and seconds of the
    event loop. Past the frame bound, frames are discarded as they are read."""
    assert_serving(peer, "warm")
    # A daemon with configured models imports transformers in the background once ready
    # (hfd.daemon.models.exporting): its peak RSS is measured after that import.
    assert daemon.wait_logged("background imports done", timeout=120)
    before = peak_rss_kib(daemon.proc.pid)
    header = encode_request(Request(id="many", op="health", body={}))[0]
    peer.send([header] + [b""] * 500_000)
    assert_serving(peer)  # and no reply to "many": replies_until would have failed on it
    grown_mib = (peak_rss_kib(daemon.proc.pid) - before) / 1024
    # What is left is ZeroMQ's own buffer for the message (~64 bytes a frame).
    assert grown_mib < 100, f"the daemon's peak RSS grew by {grown_mib:.0f} MiB"
    assert daemon.wait_logged("dropping an IPC message of too many frames")


def test_a_large_legitimate_header_is_served(peer: Peer) -> None:
    """The bounds leave room for real requests: megabytes of prompt text, 100 000 inputs
    (unknown body fields are ignored, so ``health`` answers whatever else the body holds)."""
    body = {"prompt": "word " * (1024 * 1024), "input": ["a sentence"] * 100_000}
    frames = encode_request(Request(id="big", op="health", body=body))
    assert len(frames[0]) > 5 * 1024 * 1024
    peer.send(frames)
    reply = peer.replies_until("big")[-1]
    assert reply.kind == "result" and reply.body["status"] == "ok"


def encoder_stats(peer: Peer) -> dict[str, Any]:
    peer.request("ps", "models.ps")
    models = peer.replies_until("ps")[-1].body["models"]
    return next((m["scheduler"] for m in models if m["name"] == EMBED), {})


BIG_INPUTS = [f"{i} " + "ocean waves " * 50 for i in range(2048)]

CLIENT = """
import sys
from hfd.client import Client
texts = [f"{i} " + "ocean waves " * 50 for i in range(2048)]
Client(sys.argv[1], timeout=600).embeddings.create(model=sys.argv[2], input=texts)
"""


@pytest.mark.slow  # ~15 s each: 2048 inputs to tokenise
@pytest.mark.parametrize("how", ["sigkill", "close", "cancel"])
def test_an_abandoned_embeddings_request_stops_at_the_next_batch(
    daemon: Daemon, peer: Peer, how: str
) -> None:
    """A client that is killed, closes its socket or cancels: the inputs of its request not yet
    in a batch are dropped (the scheduler's ``dropped_items``), not computed."""
    peer.send(encode_request(Request(id="load", op="models.load", body={"model": EMBED})))
    assert peer.replies_until("load", timeout=120)[-1].kind == "result"
    before = encoder_stats(peer)
    leaver: subprocess.Popen[str] | Peer
    if how == "sigkill":
        leaver = subprocess.Popen([sys.executable, "-c", CLIENT, daemon.ipc, EMBED], text=True)
    else:
        leaver = Peer(daemon.ipc, timeout=30.0)
        leaver.request("big", "embeddings.create", {"model": EMBED, "input": BIG_INPUTS})
    try:
        # Leave once the request is queued and its first batch has run.
        assert eventually(
            lambda: (
                (s := encoder_stats(peer)).get("pending_inputs", 0) > 0 and s["batches"] > before["batches"]
            ),
            timeout=120,
        ), encoder_stats(peer)
        if isinstance(leaver, Peer):
            if how == "cancel":
                leaver.request("big.cancel", "cancel", {"id": "big"})
                assert leaver.replies_until("big")[-1].body["code"] == "cancelled"
            leaver.close()
        else:
            leaver.send_signal(signal.SIGKILL)
            leaver.wait(timeout=30)
    finally:
        if isinstance(leaver, subprocess.Popen) and leaver.poll() is None:
            leaver.kill()
    assert eventually(lambda: encoder_stats(peer)["active"] == 0, timeout=120), encoder_stats(peer)
    after = encoder_stats(peer)
    computed = after["inputs"] - before["inputs"]
    dropped = after["dropped_items"] - before["dropped_items"]
    assert computed + dropped >= len(BIG_INPUTS) - after["max_batch"]  # at most one batch in flight
    assert dropped >= len(BIG_INPUTS) // 2, after
    # And the door serves the next request.
    peer.request("small", "embeddings.create", {"model": EMBED, "input": "hello"})
    small = peer.replies_until("small")[-1]
    assert small.kind == "result" and small.body["shape"] == [1, 32]
