"""``Client`` and ``AsyncClient`` over real ZeroMQ sockets.

Most tests talk to the real IPC server in-process. Client-side socket behaviour that needs a
daemon to misbehave on cue (never answer, stream then stall, interleave two streams) uses a
real ROUTER socket in a thread that plays the daemon's part of the protocol by a script.
Request building and reply parsing are tested without sockets in test_client_calls.py.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
from support.doors import door_in_thread

from hfd.client import AsyncClient, Client
from hfd.client.errors import ContextLengthExceeded, DaemonUnavailable, ModelNotFound, Timeout
from hfd.client.protocol import Reply, Request, decode_request, encode_reply
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.service import Service
from hfd.daemon.settings import ModelSpec, Settings, load_settings, with_overrides
from hfd.daemon.zmq.server import IpcServer

WAIT = 10.0  # seconds to wait for something that should happen (never asserted as a duration)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # ipc:// paths are limited to ~100 bytes: pytest's tmp_path can be too deep.
    d = Path(tempfile.mkdtemp(prefix="hfd-c"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- a scripted daemon

Script = Callable[["FakeDaemon", bytes, Request], None]


class FakeDaemon:
    """A real ROUTER at ``path`` that answers ``health`` and hands other requests to ``script``."""

    def __init__(self, path: Path, script: Script | None = None) -> None:
        self.endpoint = f"ipc://{path}"
        self.script = script or (lambda daemon, ident, req: None)
        self.received: list[Request] = []
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.bind(self.endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            ident, *frames = self._sock.recv_multipart()
            req = decode_request(frames)
            self.received.append(req)
            if req.op == "health":
                self.send(ident, Reply(id=req.id, kind="result", body={"status": "ok"}))
            elif req.op != "cancel":
                self.script(self, ident, req)

    def send(self, ident: bytes, reply: Reply) -> None:
        self._sock.send_multipart([ident, *encode_reply(reply)])

    def cancelled(self) -> list[str]:
        return [r.body["id"] for r in self.received if r.op == "cancel"]

    def wait_for_cancel(self, rid: str) -> bool:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if rid in self.cancelled():
                return True
            time.sleep(0.01)
        return False

    def request_ids(self, op: str) -> list[str]:
        return [r.id for r in self.received if r.op == op]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._ctx.term()


@contextmanager
def fake_daemon(directory: Path, script: Script | None = None) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(directory / "hfd.sock", script)
    try:
        yield daemon
    finally:
        daemon.close()


def chunk(rid: str, text: str) -> Reply:
    return Reply(
        id=rid,
        kind="chunk",
        body={
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        },
    )


def one_chunk_then_silence(daemon: FakeDaemon, ident: bytes, req: Request) -> None:
    if req.body.get("stream"):
        daemon.send(ident, chunk(req.id, "first"))


# ----------------------------------------------------------------------------- the real server


@contextmanager
def real_daemon(directory: Path) -> Iterator[str]:
    base = load_settings(
        environ={
            "HFD_STATE_DIR": str(directory / "s"),
            "HFD_CACHE_DIR": str(directory / "c"),
            "HFD_RUNTIME_DIR": str(directory / "r"),
        }
    )
    settings: Settings = with_overrides(
        base, models=(ModelSpec(ref=str(directory / "absent"), name="chat", task="generate"),)
    )
    with door_in_thread(lambda: IpcServer(Service(settings, ModelManager(settings)), settings)) as (
        _,
        endpoint,
        _,
    ):
        yield endpoint


# ----------------------------------------------------------------------------- no daemon


def test_no_socket_file_fails_at_once(short_dir: Path) -> None:
    with (
        Client(str(short_dir / "hfd.sock"), connect_timeout=60) as client,
        pytest.raises(DaemonUnavailable) as info,
    ):
        client.health()
    assert "no daemon is listening" in info.value.message and "hfd serve" in info.value.message
    assert info.value.code == "daemon_unavailable"


def test_stale_socket_file_fails_at_once(short_dir: Path) -> None:
    path = short_dir / "hfd.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    with Client(str(path), connect_timeout=60) as client, pytest.raises(DaemonUnavailable, match="stale"):
        client.models.list()


def test_a_listener_that_never_answers_is_unavailable_not_a_hang(short_dir: Path) -> None:
    path = short_dir / "hfd.sock"
    mute = socket.socket(socket.AF_UNIX)
    mute.bind(str(path))
    mute.listen(4)
    try:
        with (
            Client(str(path), connect_timeout=0.5) as client,
            pytest.raises(DaemonUnavailable, match="did not answer"),
        ):
            client.health()
    finally:
        mute.close()


def test_async_no_socket_file(short_dir: Path) -> None:
    async def main() -> None:
        async with AsyncClient(str(short_dir / "hfd.sock"), connect_timeout=60) as client:
            with pytest.raises(DaemonUnavailable, match="no daemon is listening"):
                await client.health()

    asyncio.run(main())


# ----------------------------------------------------------------------------- timeouts, cancel


def test_timeout_raises_and_cancels_on_the_daemon(short_dir: Path) -> None:
    with fake_daemon(short_dir) as daemon, Client(daemon.endpoint, timeout=0.3) as client:
        with pytest.raises(Timeout):
            client.models.list()
        (rid,) = daemon.request_ids("models.list")
        assert daemon.wait_for_cancel(rid)


def test_closing_a_stream_early_sends_cancel(short_dir: Path) -> None:
    with fake_daemon(short_dir, one_chunk_then_silence) as daemon, Client(daemon.endpoint) as client:
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        assert next(stream).choices[0].delta.content == "first"
        stream.close()
        (rid,) = daemon.request_ids("chat.completions.create")
        assert daemon.wait_for_cancel(rid)


def test_a_dropped_stream_sends_cancel_when_collected(short_dir: Path) -> None:
    with fake_daemon(short_dir, one_chunk_then_silence) as daemon, Client(daemon.endpoint) as client:
        stream = client.completions.create(model="m", prompt="x", stream=True)
        next(stream)
        del stream
        gc.collect()
        (rid,) = daemon.request_ids("completions.create")
        assert daemon.wait_for_cancel(rid)


def test_async_timeout_task_cancel_and_stream_close_all_send_cancel(short_dir: Path) -> None:
    async def main(daemon: FakeDaemon) -> None:
        async with AsyncClient(daemon.endpoint, timeout=0.3) as client:
            with pytest.raises(Timeout):
                await client.models.list()
            task = asyncio.ensure_future(client.ps(timeout=60))
            # The scripted daemon records requests on its own thread: poll until it has this one.
            while not daemon.request_ids("models.ps"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True, timeout=60
            )
            first = await stream.__anext__()
            assert first.choices[0].delta.content == "first"
            await stream.aclose()

    with fake_daemon(short_dir, one_chunk_then_silence) as daemon:
        asyncio.run(main(daemon))
        for op in ("models.list", "models.ps", "chat.completions.create"):
            (rid,) = daemon.request_ids(op)
            assert daemon.wait_for_cancel(rid), op


# ----------------------------------------------------------------------------- demultiplexing


def interleave_two_streams(daemon: FakeDaemon, ident: bytes, req: Request) -> None:
    streams = [r for r in daemon.received if r.op == "chat.completions.create"]
    if len(streams) < 2:
        return
    a, b = streams[0].id, streams[1].id
    for i in range(3):
        daemon.send(ident, chunk(a, f"a{i}"))
        daemon.send(ident, chunk(b, f"b{i}"))
    daemon.send(
        ident,
        Reply(
            id=a,
            kind="end",
            body={
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                "finish_reason": "length",
            },
        ),
    )
    daemon.send(
        ident,
        Reply(
            id=b,
            kind="error",
            body={"code": "context_length_exceeded", "message": "too long", "param": "messages"},
        ),
    )


def test_two_streams_on_one_thread_get_their_own_chunks(short_dir: Path) -> None:
    msgs = [{"role": "user", "content": "x"}]
    with fake_daemon(short_dir, interleave_two_streams) as daemon, Client(daemon.endpoint) as client:
        first = client.chat.completions.create(model="m", messages=msgs, stream=True)
        second = client.chat.completions.create(model="m", messages=msgs, stream=True)
        # Read the second stream first: the first one's chunks wait, parked, in order.
        got_b = []
        with pytest.raises(ContextLengthExceeded) as info:
            for c in second:
                got_b.append(c.choices[0].delta.content)
        assert got_b == ["b0", "b1", "b2"]
        assert info.value.param == "messages" and info.value.message == "too long"
        assert [c.choices[0].delta.content for c in first] == ["a0", "a1", "a2"]
        assert first.usage is not None and first.usage.completion_tokens == 3
        assert first.finish_reason == "length"


def test_async_two_streams_read_concurrently(short_dir: Path) -> None:
    async def read(stream: Any) -> list[str]:
        return [c.choices[0].delta.content async for c in stream]

    async def main(daemon: FakeDaemon) -> None:
        msgs = [{"role": "user", "content": "x"}]
        async with AsyncClient(daemon.endpoint) as client:
            a = await client.chat.completions.create(model="m", messages=msgs, stream=True)
            b = await client.chat.completions.create(model="m", messages=msgs, stream=True)
            results = await asyncio.gather(read(a), read(b), return_exceptions=True)
            assert results[0] == ["a0", "a1", "a2"]
            assert isinstance(results[1], ContextLengthExceeded)

    with fake_daemon(short_dir, interleave_two_streams) as daemon:
        asyncio.run(main(daemon))


# ----------------------------------------------------------------------------- the real server


def test_daemon_errors_come_back_as_the_same_class(short_dir: Path) -> None:
    with real_daemon(short_dir) as endpoint, Client(endpoint) as client:
        assert client.health()["status"] == "ok"
        assert [m.id for m in client.models.list()] == ["chat"]
        assert client.models.retrieve("chat").task == "generate"
        with pytest.raises(ModelNotFound) as info:
            client.load("nope")
        assert info.value.param == "model" and info.value.status == 404
        with pytest.raises(ModelNotFound):
            client.embeddings.create(model="nope", input="x")
        assert client.ps() == []
        assert client.unload("chat") is False


def test_one_client_from_many_threads(short_dir: Path) -> None:
    errors: list[BaseException] = []
    counts: list[int] = []
    with real_daemon(short_dir) as endpoint, Client(endpoint) as client:

        def work() -> None:
            try:
                n = 0
                for _ in range(10):
                    n += client.health()["status"] == "ok"
                    n += len(client.models.list().data)
                counts.append(n)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 3)
    assert errors == []
    assert counts == [20] * 6


def test_async_client_many_tasks_at_once(short_dir: Path) -> None:
    async def main(endpoint: str) -> None:
        async with AsyncClient(endpoint) as client:
            results = await asyncio.gather(
                *(client.health() if i % 2 else client.models.list() for i in range(40))
            )
            assert all(r["status"] == "ok" for r in results[1::2])
            assert all([m.id for m in r] == ["chat"] for r in results[0::2])
            with pytest.raises(ModelNotFound):
                await client.load("nope")
            assert await client.ps() == []

    with real_daemon(short_dir) as endpoint:
        asyncio.run(main(endpoint))


def test_request_ids_are_unique_across_threads() -> None:
    from hfd.client._common import RequestIds

    ids = RequestIds()
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.extend(ids.next() for _ in range(500))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2000


def test_a_closed_client_refuses_requests(short_dir: Path) -> None:
    client = Client(str(short_dir / "x.sock"))
    client.close()
    with pytest.raises(DaemonUnavailable, match="closed"):
        client.health()
