"""CURVE keys for reaching the daemon's IPC door over TCP (``ipc_tcp`` on the daemon).

The daemon's TCP endpoint only takes CURVE-encrypted connections from clients whose public key
is in its ``ipc_curve_clients_dir``. A client needs three keys: the daemon's public key (to
know it talks to the right daemon) and its own key pair. Each may be given as a Z85 string
(40 characters, as ``zmq.curve_keypair()`` makes them) or as the path of a ZeroMQ certificate
file, as ``hfd keys curve`` writes them (``NAME.key`` holds the public key, ``NAME.key_secret``
both). The client's public key may be left out: it is derived from the secret key.

ZeroMQ reports why a CURVE handshake failed only on a monitor socket, so :class:`HandshakeWatch`
listens there while the client makes sure the daemon answers, and turns what it saw into an
error that says which key is wrong instead of a bare timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from hfd.client.errors import DaemonUnavailable, HfdError, InvalidRequest, NotSupported, Unauthorized

KeySource = str | bytes | os.PathLike[str]

Z85_KEY_LENGTH = 40

_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


@dataclass(frozen=True)
class CurveKeys:
    server: bytes  # Z85: the daemon's public key
    public: bytes  # Z85: this client's public key
    secret: bytes  # Z85: this client's secret key

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the daemon; call before ``connect``."""
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret

    def __repr__(self) -> str:  # never print the secret key
        return f"CurveKeys(server={self.server.decode()!r}, public={self.public.decode()!r})"


def curve_keys(
    server: KeySource | None, public: KeySource | None, secret: KeySource | None
) -> CurveKeys | None:
    """The keys a client was given, checked; None when it was given none (no CURVE)."""
    if server is None and public is None and secret is None:
        return None
    if server is None or secret is None:
        raise InvalidRequest(
            "CURVE needs curve_server_key (the daemon's public key) and curve_secret_key "
            "(this client's secret key); curve_public_key is optional",
            param="curve_server_key" if server is None else "curve_secret_key",
        )
    if not zmq.has("curve"):
        raise NotSupported("this pyzmq's libzmq was built without CURVE support")
    server_key = _load(server, "curve_server_key", secret=False)
    secret_key = _load(secret, "curve_secret_key", secret=True)
    derived = zmq.curve_public(secret_key)
    if public is not None and _load(public, "curve_public_key", secret=False) != derived:
        raise InvalidRequest(
            "curve_public_key is not the public half of curve_secret_key", param="curve_public_key"
        )
    return CurveKeys(server=server_key, public=derived, secret=secret_key)


def _load(value: KeySource, param: str, *, secret: bool) -> bytes:
    """A Z85 key, from a Z85 string or from a certificate file."""
    if isinstance(value, (str, bytes)) and len(value) == Z85_KEY_LENGTH:
        text = value.encode("ascii", "replace") if isinstance(value, str) else value
        try:
            if len(z85.decode(text)) == 32:
                return text
        except (ValueError, KeyError):  # z85.decode raises either for characters outside Z85
            pass
    if not isinstance(value, bytes):
        path = Path(os.path.expanduser(os.fspath(value)))
        try:
            is_file = path.is_file()
        except (OSError, ValueError):  # a name the OS cannot even look up
            is_file = False
        if is_file:
            return _from_file(path, param, secret=secret)
    raise InvalidRequest(
        f"{param} is neither a Z85 key ({Z85_KEY_LENGTH} characters) nor a key file that exists",
        param=param,
    )


def _from_file(path: Path, param: str, *, secret: bool) -> bytes:
    try:
        public_key, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"{param}: cannot read a ZeroMQ certificate from {path}: {exc}", param=param
        ) from exc
    if not secret:
        return bytes(public_key)
    if not secret_key:
        raise InvalidRequest(f"{param}: {path} holds no secret key; give the '.key_secret' file", param=param)
    return bytes(secret_key)


class HandshakeWatch:
    """The outcome of a socket's CURVE handshakes, read from a ZeroMQ monitor socket.

    Create it before the socket connects; ``explain`` turns a daemon that did not answer into
    the more precise error the handshake events support. Works for sync and asyncio sockets
    alike: the monitor is read with a plain socket on a shadow of the same context.
    """

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._address = f"inproc://hfd-client-monitor-{id(sock):x}-{os.urandom(4).hex()}"
        sock.monitor(self._address, _HANDSHAKE_EVENTS)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(sock.context.underlying)
        self._pair: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        self._pair.linger = 0
        self._pair.connect(self._address)
        self._closed = False

    def events(self) -> list[int]:
        """The handshake events seen so far (never blocks)."""
        seen: list[int] = []
        while not self._closed and self._pair.poll(0):
            frames = self._pair.recv_multipart()
            # A monitor message's first frame: a 16-bit event number, then a 32-bit value.
            seen.append(int.from_bytes(frames[0][:2], "little"))
        return seen

    def explain(self, endpoint: str, err: DaemonUnavailable) -> HfdError:
        events = self.events()
        details = {"endpoint": endpoint}
        if zmq.EVENT_HANDSHAKE_FAILED_AUTH in events:
            return Unauthorized(
                f"the daemon at {endpoint} refused this client's CURVE key: its public key is not "
                "in the daemon's ipc_curve_clients_dir",
                details=details,
            )
        if zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL in events or zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL in events:
            return DaemonUnavailable(
                f"the CURVE handshake with {endpoint} failed: is curve_server_key the daemon's "
                "public key, and does the endpoint serve CURVE (ipc_tcp)?",
                details=details,
            )
        return err

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass  # the socket is already closed
        self._pair.close(linger=0)
