"""What the transports share: request ids, the reachability probe, reply-kind checks."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading

from hfd.client.curve import CurveKeys
from hfd.client.errors import DaemonUnavailable, ProtocolError, error_from_dict
from hfd.client.paths import socket_path
from hfd.client.protocol import KIND_ERROR, KIND_RESULT, OP_CANCEL, OP_HEALTH, Reply, Request

DEFAULT_TIMEOUT = 60.0
# How long the first request waits for the daemon to answer `health` before giving up with
# DaemonUnavailable: long enough for a busy daemon, short enough not to look like a hang.
DEFAULT_CONNECT_TIMEOUT = 5.0

_START_HINT = "start it with `hfd serve` (or `systemctl start hfd`)"


class TransportBase:
    """What the ZeroMQ transports share: where, how long to wait to connect, CURVE keys."""

    def __init__(self, endpoint: str, *, connect_timeout: float, curve: CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self._curve = curve
        self._ids = RequestIds()  # for the health check: unique per process, as the clients'
        self._checked = False  # a daemon answered the health check
        self._closed = False

    def _send_wait(self, timeout: float | None) -> float:
        """How long a send may wait for the daemon to take it."""
        return self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)


class RequestIds:
    """Request ids unique for one client socket: a per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}.{os.urandom(3).hex()}"
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            n = next(self._counter)
        return f"{self._prefix}.{n}"


def probe_socket(endpoint: str) -> None:
    """Fail at once, with a useful message, when nothing can be listening at ``endpoint``.

    ZeroMQ connects lazily and retries for ever, so without this a missing daemon would show
    up as a request timeout. A plain unix-socket connect tells the cases apart instantly. Other
    transports (``tcp://``) have nothing to probe: there the health request's timeout decides.
    """
    path = socket_path(endpoint)
    if path is None:
        return
    if not path.exists():
        raise DaemonUnavailable(
            f"no daemon is listening on {endpoint} (the socket does not exist); {_START_HINT}",
            details={"endpoint": endpoint},
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except PermissionError as exc:
        raise DaemonUnavailable(
            f"permission denied on {path}: join the group that owns it (often 'hfd')",
            details={"endpoint": endpoint},
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise DaemonUnavailable(
                f"no daemon is listening on {endpoint} (a stale socket file); {_START_HINT}",
                details={"endpoint": endpoint},
            ) from exc
        raise DaemonUnavailable(
            f"cannot connect to {endpoint}: {exc}", details={"endpoint": endpoint}
        ) from exc
    finally:
        probe.close()


def not_answering(endpoint: str, seconds: float) -> DaemonUnavailable:
    if endpoint.startswith("ipc://"):
        hint = f"is it running? {_START_HINT}"
    else:
        # No socket file to check: an absent daemon and a refused key both look like silence.
        hint = "is a daemon serving this address (ipc_tcp), and are the CURVE keys right?"
    return DaemonUnavailable(
        f"the daemon at {endpoint} did not answer within {seconds:g}s; {hint}",
        details={"endpoint": endpoint},
    )


def raise_for_error(reply: Reply) -> Reply:
    if reply.kind == KIND_ERROR:
        raise error_from_dict(reply.body)
    return reply


def expect_kind(reply: Reply, *kinds: str) -> Reply:
    raise_for_error(reply)
    if reply.kind not in kinds:
        raise ProtocolError(f"unexpected reply kind {reply.kind!r}; expected {' or '.join(kinds)}")
    return reply


def cancel_request(rid: str) -> Request:
    """The request that stops ``rid`` on the daemon (it has no reply of its own)."""
    return Request(id=f"{rid}.cancel", op=OP_CANCEL, body={"id": rid})


def health_request(ids: RequestIds) -> Request:
    return Request(id=ids.next(), op=OP_HEALTH, body={})


def check_health(reply: Reply | None, endpoint: str, seconds: float) -> None:
    """The first request's check: silence means no daemon answers at ``endpoint``."""
    if reply is None:
        raise not_answering(endpoint, seconds)
    expect_kind(reply, KIND_RESULT)
