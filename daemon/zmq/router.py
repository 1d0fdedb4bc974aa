"""The IPC door's socket: a ROUTER with the options the door relies on, bound with its peer checks.

``ROUTER_MANDATORY`` makes a send to a departed peer fail (how the door notices disconnects),
the send high-water mark bounds how far a client may fall behind, ZMTP heartbeats drop a
peer whose machine vanished, and the socket file is bound privately (``bind``) so it never
exists with the wrong mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.asyncio

from hfd.daemon.zmq.bind import bind_private

if TYPE_CHECKING:
    from hfd.daemon.access.control import Access
    from hfd.daemon.settings import Settings

# Messages queued per client before sends to it report EAGAIN (a stream is one message per
# chunk: this is how far a client may fall behind before it counts as stalled).
SEND_HWM = 1000
# Seconds shutdown waits for final replies to leave the socket.
CLOSE_LINGER_MS = 1000
# ZMTP heartbeats: a ping every 10 s; no traffic for 30 s and the connection is dropped.
HEARTBEAT_IVL_MS = 10_000
HEARTBEAT_TIMEOUT_MS = 30_000


def open_router(
    ctx: zmq.asyncio.Context, settings: Settings, access: Access, path: Path, endpoint: str
) -> zmq.asyncio.Socket:
    """The door's ROUTER socket, bound at ``path`` (and the optional TCP endpoint), options set."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, SEND_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, settings.ipc_max_message_bytes)
    sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
    # A peer that answers no ZMTP ping for HEARTBEAT_TIMEOUT_MS (a TCP client whose machine
    # vanished) is disconnected, which cancels its requests (daemon/zmq/peers.py).
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    access.secure_ipc(sock)  # the peer check (ZAP) for every connection

    def zmq_bind(at: str) -> None:
        try:
            sock.bind(f"ipc://{at}")
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind the IPC socket {endpoint}: {exc}") from exc

    try:
        # Never reachable with the umask's mode: bound in a private directory, moved here.
        bind_private(path, zmq_bind, mode=settings.ipc_mode, group=settings.ipc_group)
    except BaseException:
        sock.close(linger=0)
        raise
    try:
        access.bind_tcp(sock)  # the optional CURVE-only TCP endpoint (ipc_tcp)
    except BaseException:
        sock.close(linger=0)
        path.unlink(missing_ok=True)
        raise
    return sock
