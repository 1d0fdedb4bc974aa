"""ZeroMQ authentication (ZAP, RFC 27) for the IPC door.

libzmq asks a ZAP handler, bound at ``inproc://zeromq.zap.01`` in the same context, about
every new connection on a socket that has a ZAP domain, before any message gets through:

- ``ipc://`` connections (NULL mechanism, domain ``hfd-ipc``): the peer's uid/gid/pid, read by
  libzmq with ``SO_PEERCRED``/``LOCAL_PEERCRED`` at accept time, arrive in the address field;
  :class:`~hfd.daemon.access.peercred.PeerPolicy` decides. A refused peer never gets a message in.
- ``tcp://`` connections (CURVE mechanism, domain ``hfd-tcp``): the client's long-term public
  key must be one of the certificates in the allowed clients directory (re-read when it
  changes, so adding or removing a client needs no restart).

The user id given back (``uid:<n>`` or ``curve:<z85 public key>``) is attached by libzmq to
every message of that connection (the ``User-Id`` frame property), so the IPC server knows
who sent a request without asking again.

Caveat: libzmq consults the handler only while one is bound; :meth:`ZapAuthenticator.start`
therefore returns only once the handler listens, and must run before the sockets bind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from hfd.client.errors import CurveKeyError, InvalidRequest
from hfd.daemon.access.peercred import PeerPolicy, parse_zmq_peer_address

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_REBIND_WAIT = 2.0  # seconds a new handler waits for a stopped one's endpoint
IPC_DOMAIN = b"hfd-ipc"
TCP_DOMAIN = b"hfd-tcp"
USER_UID_PREFIX = "uid:"
USER_CURVE_PREFIX = "curve:"


def load_server_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a ZeroMQ certificate holding a secret key.

    Refuses a file other users can read: whoever holds the secret key can impersonate the
    daemon to every client.
    """
    try:
        public, secret = zmq.auth.load_certificate(str(path))
        mode = path.stat().st_mode
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the CURVE secret key {path}: {exc}") from exc
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key (use the '*.key_secret' file)")
    if mode & stat.S_IROTH:
        raise CurveKeyError(f"CURVE secret key {path} is readable by other users; chmod 600 it")
    return public, secret


def create_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public, to hand out) and ``<name>.key_secret`` (mode 0600)."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidRequest(f"invalid key name {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old)
    os.chmod(public, 0o644)
    return Path(public), Path(secret)


class CurveClients:
    """The allowed clients' public keys: every certificate (``*.key``) in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._keys: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()

    def _current_stamp(self) -> tuple[tuple[str, int, int], ...]:
        # Each certificate's name, mtime and size: a directory's own mtime can miss a change
        # made within one clock tick. Connections are rare enough for a listing each.
        out = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".key") and entry.is_file():
                st = entry.stat()
                out.append((entry.name, st.st_mtime_ns, st.st_size))
        return tuple(sorted(out))

    def keys(self) -> frozenset[bytes]:
        """The allowed public keys (raw 32 bytes), re-read when the directory changed."""
        with self._lock:
            try:
                stamp = self._current_stamp()
            except OSError:
                log.warning("CURVE clients directory unreadable", extra={"path": str(self.directory)})
                return frozenset()
            if stamp != self._stamp:
                loaded = zmq.auth.load_certificates(str(self.directory))
                self._keys = frozenset(z85.decode(k) for k in loaded)
                self._stamp = stamp
                log.info(
                    "CURVE clients loaded", extra={"path": str(self.directory), "count": len(self._keys)}
                )
            return self._keys

    def allows(self, public_key: bytes) -> bool:
        return public_key in self.keys()


class ZapAuthenticator:
    """The ZAP handler for one ZeroMQ context, in its own thread."""

    def __init__(
        self,
        context: zmq.Context[Any],
        *,
        peers: PeerPolicy | None = None,
        curve_clients: CurveClients | None = None,
        on_refuse: Callable[[], None] | None = None,
    ) -> None:
        # A zmq.asyncio context shares the underlying libzmq context with a plain shadow.
        self._underlying = context.underlying
        self._context: zmq.Context[Any] = zmq.Context.shadow(context.underlying)
        self.peers = peers
        self.curve_clients = curve_clients
        self.refused = 0
        self._on_refuse = on_refuse
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hfd-zap", daemon=True)
        self._thread.start()
        self._bound.wait()
        if self._error is not None:
            raise self._error

    def serves(self, context: zmq.Context[Any]) -> bool:
        """Whether this handler is alive in ``context``."""
        return self._underlying == context.underlying and self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def secure_ipc(self, sock: zmq.Socket[Any]) -> None:
        """Have libzmq ask this handler about every connection of the next ``ipc://`` bind."""
        sock.setsockopt(zmq.ZAP_DOMAIN, IPC_DOMAIN)

    def secure_tcp(self, sock: zmq.Socket[Any], secret_key: bytes) -> None:
        """CURVE server options for the next ``tcp://`` bind (options apply per bind)."""
        if self.curve_clients is None:
            raise CurveKeyError("a TCP endpoint needs a directory of allowed CURVE client keys")
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret_key)
        sock.setsockopt(zmq.ZAP_DOMAIN, TCP_DOMAIN)

    # ------------------------------------------------------------------ handler thread

    def _run(self) -> None:
        try:
            zap = self._context.socket(zmq.REP)
            zap.linger = 0
        except zmq.ZMQError as exc:
            self._error = exc
            self._bound.set()
            return
        # A handler stopped just before (a restart) releases the endpoint from libzmq's reaper
        # thread, after its close returned: a bind in that window sees EADDRINUSE, briefly.
        deadline = time.monotonic() + _REBIND_WAIT
        while True:
            try:
                zap.bind(ZAP_ENDPOINT)
                break
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    zap.close(linger=0)
                    self._error = exc
                    self._bound.set()
                    return
                time.sleep(0.02)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if not zap.poll(100):
                    continue
                request = zap.recv_multipart()
                zap.send_multipart(self._answer(request))
        except zmq.ContextTerminated:
            pass
        finally:
            with contextlib.suppress(zmq.ZMQError):
                zap.unbind(ZAP_ENDPOINT)  # at once, not when the reaper closes the socket
            zap.close(linger=0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != b"1.0":
            rid = request[1] if len(request) > 1 else b""
            return [b"1.0", rid, b"500", b"malformed ZAP request", b"", b""]
        _version, rid, domain, address, _identity, mechanism, *credentials = request
        allowed, user, reason = self._decide(
            domain, address.decode("utf-8", "replace"), mechanism, credentials
        )
        if not allowed:
            self.refused += 1
            if self._on_refuse is not None:
                self._on_refuse()
            log.warning(
                "connection refused",
                extra={
                    "domain": domain.decode(errors="replace"),
                    "peer": address.decode(errors="replace"),
                    "reason": reason,
                },
            )
            return [b"1.0", rid, b"400", reason.encode(), b"", b""]
        return [b"1.0", rid, b"200", b"OK", user.encode(), b""]

    def _decide(
        self, domain: bytes, address: str, mechanism: bytes, credentials: list[bytes]
    ) -> tuple[bool, str, str]:
        if domain == IPC_DOMAIN and mechanism == b"NULL":
            cred = parse_zmq_peer_address(address)
            if cred is None:
                return False, "", "peer credentials unavailable"
            if self.peers is not None and not self.peers.allows(cred):
                return False, "", f"uid {cred.uid} is not allowed"
            return True, f"{USER_UID_PREFIX}{cred.uid}", ""
        if domain == TCP_DOMAIN and mechanism == b"CURVE" and credentials:
            key = credentials[0]
            if self.curve_clients is None or not self.curve_clients.allows(key):
                return False, "", "CURVE key not allowed"
            return True, USER_CURVE_PREFIX + z85.encode(key).decode("ascii"), ""
        return False, "", f"mechanism {mechanism.decode(errors='replace')} not allowed in this domain"
