"""Peer credentials: SO_PEERCRED on a real unix socket pair, libzmq's ipc peer address read
back, and the ZAP handler refusing a real ZeroMQ ipc connection from a peer not allowed."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import sys
import threading
from pathlib import Path

import pytest
import zmq

from hfd.client.errors import InvalidRequest
from hfd.daemon.access.peercred import (
    PeerCred,
    PeerPolicy,
    parse_zmq_peer_address,
    resolve_gid,
    resolve_uid,
    socket_peercred,
)
from hfd.daemon.access.zap import (
    CurveClients,
    CurveKeyError,
    ZapAuthenticator,
    create_keypair,
    load_server_secret,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="unix sockets only")


def test_socketpair_credentials_are_ours() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        cred = socket_peercred(a)
    assert (cred.uid, cred.gid) == (os.getuid(), os.getgid())
    if sys.platform.startswith("linux"):
        assert cred.pid == os.getpid()


def test_zmq_peer_address_parsing() -> None:
    assert parse_zmq_peer_address("localhost:1000:100:4242") == PeerCred(1000, 100, 4242)
    assert parse_zmq_peer_address("localhost:501:20:") == PeerCred(501, 20, None)  # macOS: no pid
    assert parse_zmq_peer_address("127.0.0.1") is None
    assert parse_zmq_peer_address("") is None
    assert parse_zmq_peer_address("a:b:c:d") is None


def test_policy() -> None:
    policy = PeerPolicy(users=frozenset({1234}), groups=frozenset({4321}), always=frozenset({0}))
    assert policy.allows(PeerCred(0, 0))
    assert policy.allows(PeerCred(1234, 1))
    assert policy.allows(PeerCred(99999, 4321))
    assert not policy.allows(PeerCred(99999, 99999))
    assert not policy.allows(None)


def _roundtrip(ctx: zmq.Context, path: Path) -> bytes | None:  # type: ignore[type-arg]
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    client.connect(f"ipc://{path}")
    client.send(b"ping")
    try:
        return client.recv() if client.poll(1500) else None
    finally:
        client.close()


def _serve_once(server: zmq.Socket, seen: list[str]) -> None:  # type: ignore[type-arg]
    if server.poll(2000):
        frames = server.recv_multipart(copy=False)
        seen.append(str(frames[-1].get("User-Id")))
        server.send_multipart([frames[0].bytes, b"pong"])


def test_users_and_groups_resolve_by_name_or_number() -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    assert resolve_uid(me) == resolve_uid(f" {os.getuid()} ") == resolve_uid(os.getuid()) == os.getuid()
    assert resolve_gid(group) == resolve_gid(str(os.getgid())) == os.getgid()
    with pytest.raises(InvalidRequest, match="unknown user 'no-such-user-hfd'"):
        resolve_uid("no-such-user-hfd")
    with pytest.raises(InvalidRequest, match="unknown group 'no-such-group-hfd'"):
        resolve_gid("no-such-group-hfd")


def test_zap_refuses_an_ipc_peer_not_allowed(tmp_path: Path) -> None:
    """Our own uid is left out of the policy, so our own connection must be refused."""
    ctx = zmq.Context()
    path = tmp_path / "s.sock"
    try:
        for allowed, expect in ((frozenset({os.getuid()}), b"pong"), (frozenset({os.getuid() + 1}), None)):
            zap = ZapAuthenticator(ctx, peers=PeerPolicy(users=allowed, always=frozenset()))
            zap.start()
            server = ctx.socket(zmq.ROUTER)
            server.linger = 0
            zap.secure_ipc(server)
            server.bind(f"ipc://{path}")
            try:
                seen: list[str] = []
                t = threading.Thread(target=_serve_once, args=(server, seen))
                t.start()
                assert _roundtrip(ctx, path) == expect
                t.join()
                if expect is None:
                    # libzmq may retry the handshake; every attempt is refused.
                    assert seen == [] and zap.refused >= 1
                else:
                    assert seen == [f"uid:{os.getuid()}"]
            finally:
                server.close()
                zap.stop()
    finally:
        ctx.term()


def test_curve_keys(tmp_path: Path) -> None:
    public, secret = create_keypair(tmp_path / "server", "server")
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    pub, sec = load_server_secret(secret)
    assert len(pub) == 40 and len(sec) == 40
    with pytest.raises(CurveKeyError, match="no secret"):
        load_server_secret(public)
    secret.chmod(0o644)
    with pytest.raises(CurveKeyError, match="readable by other users"):
        load_server_secret(secret)
    clients = tmp_path / "clients"
    clients.mkdir()
    c = CurveClients(clients)
    assert c.keys() == frozenset()
    cpub, _ = create_keypair(tmp_path / "c", "alice")
    (clients / "alice.key").write_bytes(cpub.read_bytes())
    assert len(c.keys()) == 1
