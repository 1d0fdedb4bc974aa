"""Which IPC clients have gone: disconnects, per client identity, for the ROUTER.

ZeroMQ never tells a ROUTER that a peer went away. A socket monitor does report each
connection's ``ACCEPTED`` and ``DISCONNECTED``, by file descriptor, and every message says
which descriptor it came in on (``SRCFD``). Together: a disconnect names the identities that
sent on that descriptor since it was accepted, and the server cancels their requests (an
embeddings request then stops at its next batch boundary, a generation at its next step).

Events are read before each message is handled (``drain``), so a descriptor number the kernel
reuses for a new connection is never taken for the old one: the old connection's
``DISCONNECTED`` and the new one's ``ACCEPTED`` were queued before the new connection could
send anything. ZeroMQ heartbeats (set on the socket by the server) turn a peer that vanished
without closing its connection (a TCP peer's machine gone) into a disconnect too.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
# Identities remembered as gone, to drop a message of theirs still queued behind the
# disconnect. ROUTER identities are never reused, so a bounded memory is enough.
GONE_REMEMBERED = 4096


def source_fd(frame: zmq.Frame) -> int | None:
    """The descriptor a message came in on, or None when libzmq does not say."""
    try:
        fd = frame.get(zmq.SRCFD)
    except (zmq.ZMQError, AttributeError, TypeError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class PeerWatch:
    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self._monitor: zmq.asyncio.Socket = sock.get_monitor_socket(EVENTS)
        # The same socket, for reads that must not wait (drain).
        self._plain: zmq.Socket[bytes] = zmq.Socket.shadow(self._monitor.underlying)
        self._sock = sock
        self._by_fd: dict[int, set[bytes]] = {}
        self._gone: OrderedDict[bytes, None] = OrderedDict()

    def seen(self, ident: bytes, fd: int | None) -> None:
        if fd is not None:
            self._by_fd.setdefault(fd, set()).add(ident)

    def is_gone(self, ident: bytes) -> bool:
        return ident in self._gone

    def drain(self) -> list[bytes]:
        """Apply the events queued so far (never waits); returns identities that went away."""
        gone: list[bytes] = []
        while (frames := self._recv_nowait()) is not None:
            gone += self._apply(frames)
        return gone

    async def wait(self) -> list[bytes]:
        """Wait for the next events; returns identities that went away."""
        # Poll, then read and apply at once: an event received into a future but applied only
        # when its task next runs could come after a message on the reused descriptor.
        await self._monitor.poll(flags=zmq.POLLIN)  # type: ignore[call-arg]
        return self.drain()

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)

    # ----------------------------------------------------------------- internals

    def _recv_nowait(self) -> list[bytes] | None:
        try:
            return self._plain.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def _apply(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 1 or len(frames[0]) < 6:
            return []
        event = int.from_bytes(frames[0][:2], "little")
        fd = int.from_bytes(frames[0][2:6], "little")
        idents = self._by_fd.pop(fd, set())
        # ACCEPTED on a descriptor still holding identities: its DISCONNECTED was missed.
        if event not in (zmq.EVENT_DISCONNECTED, zmq.EVENT_ACCEPTED) or not idents:
            return []
        for ident in idents:
            self._gone[ident] = None
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)
        return sorted(idents)
