"""The IPC server in-process, with the real service, over a real ZeroMQ ipc:// socket: the
socket file's life, and that no input makes it stop serving (no model is loaded here)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import msgpack
import pytest
from support.doors import door_in_thread
from support.ipc_peer import Peer
from support.waiting import eventually

from hfd.client.errors import HfdError
from hfd.client.protocol import PROTOCOL_VERSION, packb
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.service import Service
from hfd.daemon.settings import ModelSpec, Settings, load_settings, with_overrides
from hfd.daemon.zmq.server import IpcServer

_RUNTIME_DIRS: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_runtime_dirs() -> Iterator[None]:
    yield
    while _RUNTIME_DIRS:
        shutil.rmtree(_RUNTIME_DIRS.pop(), ignore_errors=True)


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    # ipc:// paths are limited to ~100 bytes: a short runtime dir, not pytest's deep tmp_path.
    runtime = Path(tempfile.gettempdir()) / f"hfd-u{uuid.uuid4().hex[:10]}"
    _RUNTIME_DIRS.append(runtime)
    base = load_settings(
        environ={
            "HFD_STATE_DIR": str(tmp_path / "state"),
            "HFD_CACHE_DIR": str(tmp_path / "cache"),
            "HFD_RUNTIME_DIR": str(runtime),
        }
    )
    models = (ModelSpec(ref=str(tmp_path / "absent"), name="chat", task="generate"),)
    return with_overrides(base, **{"models": models, "grace_period": 2.0, **changes})


@contextmanager
def running(settings: Settings) -> Iterator[IpcServer]:
    """The server on its own event loop in a thread, as the daemon runs it."""
    with door_in_thread(lambda: IpcServer(Service(settings, ModelManager(settings)), settings)) as (
        server,
        endpoint,
        _,
    ):
        assert endpoint == settings.ipc_endpoint()
        yield server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def peer(settings: Settings) -> Iterator[Peer]:
    with running(settings):
        p = Peer(settings.ipc_endpoint())
        yield p
        p.close()


def assert_serving(peer: Peer) -> None:
    peer.request("ping", "health")
    reply = peer.reply()
    assert (reply.id, reply.kind, reply.body["status"]) == ("ping", "result", "ok")


def test_socket_file_gets_its_mode_and_is_removed_after_shutdown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ipc_mode=0o640)
    path = settings.ipc_socket()
    with running(settings):
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o640
    assert not path.exists()


def test_the_socket_file_never_exists_with_the_umasks_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under umask 000 a fresh socket file is 0777 until it is chmod-ed: the final path must
    not exist before that (it is bound elsewhere and moved in with its mode already set)."""
    settings = make_settings(tmp_path, ipc_mode=0o600)
    path = settings.ipc_socket()
    seen: list[int | None] = []
    real_chmod = os.chmod

    def watching_chmod(target: Any, mode: int, *args: Any, **kwargs: Any) -> None:
        # What anyone could see at the socket's path at the moment its mode gets set.
        try:
            seen.append(stat.S_IMODE(path.lstat().st_mode))
        except FileNotFoundError:
            seen.append(None)
        real_chmod(target, mode, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", watching_chmod)
    old_umask = os.umask(0)
    try:
        with running(settings):
            st = path.lstat()
            leftovers = [p.name for p in path.parent.iterdir() if p.name != path.name]
    finally:
        os.umask(old_umask)
    assert seen and seen == [None] * len(seen), f"the socket was reachable with mode {seen}"
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert leftovers == []  # the private directory it was bound in is gone


def test_two_daemons_on_one_path_the_second_is_refused(settings: Settings) -> None:
    with running(settings):
        with pytest.raises(OSError) as info, running(settings):
            pass
        assert info.value.errno == errno.EADDRINUSE
        peer = Peer(settings.ipc_endpoint())
        assert_serving(peer)
        peer.close()


def _bound_at_the_socket_path(settings: Settings) -> socket.socket:
    """A unix socket of another process's making, bound where the daemon's socket goes."""
    path = settings.ipc_socket()
    path.parent.mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


def test_a_stale_socket_file_is_replaced(settings: Settings) -> None:
    _bound_at_the_socket_path(settings).close()  # the file stays behind, as after a crash
    with running(settings):
        peer = Peer(settings.ipc_endpoint())
        assert_serving(peer)
        peer.close()


def test_a_live_socket_or_another_file_is_not_taken_over(settings: Settings) -> None:
    path = settings.ipc_socket()
    live = _bound_at_the_socket_path(settings)
    live.listen(1)
    try:
        with pytest.raises(OSError) as info, running(settings):
            pass
        assert info.value.errno == errno.EADDRINUSE
    finally:
        live.close()
        path.unlink()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"), running(settings):
        pass
    assert path.read_text() == "not a socket"


def header(**fields: Any) -> bytes:
    return packb(fields)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([header(v=PROTOCOL_VERSION, id="a", op="no.such.op")], "unknown_operation"),
        ([header(v=PROTOCOL_VERSION + 1, id="a", op="health")], "protocol_error"),
        ([header(v=PROTOCOL_VERSION, id="a", op=["health"])], "protocol_error"),
        ([header(v=PROTOCOL_VERSION, id="a", op="health", body=[1, 2])], "protocol_error"),
        ([header(v=PROTOCOL_VERSION, id="a", op="models.load", body={"model": 5})], "validation_error"),
        ([header(v=PROTOCOL_VERSION, id="a", op="models.load", body={})], "validation_error"),
        (
            [header(v=PROTOCOL_VERSION, id="a", op="embeddings.create", body={"model": "chat", "input": 5})],
            "validation_error",
        ),
        (
            [
                header(
                    v=PROTOCOL_VERSION,
                    id="a",
                    op="chat.completions.create",
                    body={"model": "chat", "messages": "hi"},
                )
            ],
            "validation_error",
        ),
        (
            [
                header(
                    v=PROTOCOL_VERSION,
                    id="a",
                    op="chat.completions.create",
                    body={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                )
            ],
            "model_not_found",
        ),
        ([header(v=PROTOCOL_VERSION, id="a", op="models.unload", body={"model": "nope"})], "model_not_found"),
    ],
)
def test_bad_requests_with_a_readable_id_get_an_error_reply(
    peer: Peer, frames: list[bytes], code: str
) -> None:
    peer.send(frames)
    reply = peer.reply()
    assert (reply.id, reply.kind) == ("a", "error")
    assert reply.body["code"] == code
    assert {"message", "type", "param"} <= set(reply.body)
    assert_serving(peer)


@pytest.mark.parametrize(
    "frames",
    [
        [b"\xc1\xc1\xc1"],
        [b""],
        [packb([1, 2, 3])],
        [header(v=PROTOCOL_VERSION, op="health")],
        [header(v=PROTOCOL_VERSION, id=12, op="health")],
        [msgpack.packb({1: 2})],
        [b"\x00" * 64, b"extra frame"],
    ],
)
def test_unreadable_messages_are_dropped_and_serving_goes_on(peer: Peer, frames: list[bytes]) -> None:
    peer.send(frames)
    assert peer.silent()
    assert_serving(peer)


def test_other_clients_are_served_while_one_sends_garbage(settings: Settings) -> None:
    with running(settings):
        bad, good = Peer(settings.ipc_endpoint()), Peer(settings.ipc_endpoint())
        try:
            for i in range(20):
                bad.send([os.urandom(32)])
                good.request(f"g{i}", "models.list")
            ids = sorted(good.reply().id for _ in range(20))
            assert ids == sorted(f"g{i}" for i in range(20))
        finally:
            bad.close()
            good.close()


def test_many_requests_in_flight_from_one_client(peer: Peer) -> None:
    for i in range(30):
        peer.request(f"r{i}", "health" if i % 2 else "models.ps")
    replies = [peer.reply() for _ in range(30)]
    assert sorted(r.id for r in replies) == sorted(f"r{i}" for i in range(30))
    assert all(r.kind == "result" for r in replies)
    assert all(r.body == {"models": []} for r in replies if int(r.id[1:]) % 2 == 0)


def test_cancel_of_an_unknown_id_has_no_reply(peer: Peer) -> None:
    peer.request("c", "cancel", {"id": "never-sent"})
    peer.request("c2", "cancel", {})
    assert peer.silent()
    assert_serving(peer)


def test_models_list_and_hardware_ops(peer: Peer) -> None:
    peer.request("m", "models.list")
    models = peer.reply().body
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["chat"]
    peer.request("h", "hardware")
    hw = peer.reply(timeout=60)
    assert hw.kind == "result"
    assert {"cpu", "memory", "choices"} <= set(hw.body)


def test_socket_group_is_set_when_configured(tmp_path: Path) -> None:
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    settings = make_settings(tmp_path, ipc_group=group, ipc_mode=0o660)
    with running(settings):
        st = settings.ipc_socket().stat()
        assert st.st_gid == os.getgid() and stat.S_IMODE(st.st_mode) == 0o660


def test_an_unknown_group_stops_the_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ipc_group="no-such-group-hfd")
    with pytest.raises((OSError, HfdError), match="no-such-group-hfd"), running(settings):
        pass
    assert not settings.ipc_socket().exists()


class SlowLoads(Service):
    """The real service, with loads that take as long as the model name says (in seconds)."""

    async def load(self, name: str, keep_alive: float | None = None) -> dict[str, Any]:
        await anyio.sleep(float(name))
        return {"name": name}


def test_shutdown_refuses_new_requests_and_gives_in_flight_ones_the_grace_period(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, grace_period=1.0)
    with anyio.from_thread.start_blocking_portal() as portal:

        async def build() -> IpcServer:
            return IpcServer(SlowLoads(settings, ModelManager(settings)), settings)

        server = portal.call(build)
        future, endpoint = portal.start_task(server.serve)
        peer = Peer(endpoint)
        try:
            peer.request("quick", "models.load", {"model": "0.3"})
            peer.request("slow", "models.load", {"model": "60"})
            assert_serving(peer)  # both loads are in flight now
            portal.call(server.shutdown)
            peer.request("late", "health")
            replies = {r.id: r for r in (peer.reply(), peer.reply(), peer.reply())}
            future.result(timeout=15)
        finally:
            peer.close()
    assert replies["late"].kind == "error" and replies["late"].body["code"] == "model_unavailable"
    assert replies["late"].body["retry_after"] > 0
    assert replies["quick"].kind == "result" and replies["quick"].body == {"name": "0.3"}
    assert replies["slow"].kind == "error" and replies["slow"].body["code"] == "cancelled"
    assert not settings.ipc_socket().exists()


@contextmanager
def slow_server(settings: Settings) -> Iterator[tuple[IpcServer, anyio.from_thread.BlockingPortal]]:
    with door_in_thread(lambda: IpcServer(SlowLoads(settings, ModelManager(settings)), settings)) as (
        server,
        _,
        portal,
    ):
        yield server, portal


def in_flight(server: IpcServer, portal: anyio.from_thread.BlockingPortal) -> list[str]:
    async def ids() -> list[str]:
        return sorted(rid for _, rid in server._inflight)

    return portal.call(ids)


def test_a_client_that_disconnects_has_its_requests_cancelled(settings: Settings) -> None:
    """ZeroMQ does not tell a ROUTER about disconnects; the socket monitor does, and a request
    that sends nothing until its end (a load, an embeddings request) is cancelled at once."""
    with slow_server(settings) as (server, portal):
        gone = Peer(settings.ipc_endpoint())
        gone.request("a", "models.load", {"model": "60"})
        assert_serving(gone)
        assert in_flight(server, portal) == ["a"]
        gone.close()
        # Reconnecting at once tends to get the same file descriptor: its requests must not be
        # taken for the gone client's.
        other = Peer(settings.ipc_endpoint())
        try:
            other.request("b", "models.load", {"model": "60"})
            assert_serving(other)
            assert eventually(lambda: in_flight(server, portal) == ["b"]), in_flight(server, portal)
            other.request("b2", "health")
            assert other.reply().id == "b2"
            assert in_flight(server, portal) == ["b"]
        finally:
            other.close()
        assert eventually(lambda: in_flight(server, portal) == [])
