"""A client dropped without ``close()`` neither hangs its program nor leaks sockets, threads or
file descriptors: thousands of sync and async clients, each with a request answered and a
stream left half-read, dropped and collected, in a subprocess (so a hang is a timeout)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, os, sys, threading
    import zmq
    from hfd.client import AsyncClient, Client
    from hfd.client.protocol import Reply, decode_request, encode_reply

    path, rounds = sys.argv[1], int(sys.argv[2])
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("ipc://" + path)

    def serve():
        # A real ROUTER speaking the protocol: a result per request; a stream of chunks
        # that never ends (so the client's stream is dropped half-read).
        while True:
            ident, *frames = router.recv_multipart()
            req = decode_request(frames)
            if req.op == "cancel":
                continue
            if req.op == "chat.completions.create":
                for i in range(3):
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                             "choices": [{"index": 0, "delta": {"content": str(i)}, "finish_reason": None}]}
                    router.send_multipart([ident, *encode_reply(Reply(req.id, "chunk", chunk))])
                continue
            router.send_multipart([ident, *encode_reply(Reply(req.id, "result", {"status": "ok"}))])

    threading.Thread(target=serve, daemon=True).start()
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    def use_sync():
        c = Client(path, timeout=10)
        c.health()
        stream = c.chat.completions.create(**chat)
        next(stream)  # half-read, then dropped with the client

    async def use_async():
        c = AsyncClient(path, timeout=10)
        await c.health()
        stream = await c.chat.completions.create(**chat)
        await stream.__anext__()

    def worker_thread():
        # A client used from a thread that ends: its thread's socket goes with the thread.
        c = Client(path, timeout=10)
        t = threading.Thread(target=c.health)
        t.start()
        t.join()

    # An event loop in another thread: a collection in this thread finalizes its clients.
    other_loop = asyncio.new_event_loop()
    threading.Thread(target=other_loop.run_forever, daemon=True).start()

    def on_other_loop():
        asyncio.run_coroutine_threadsafe(use_async(), other_loop).result(timeout=30)
        gc.collect()

    def sample():
        gc.collect()
        return len(os.listdir("/proc/self/fd")), threading.active_count()

    use_sync(); asyncio.run(use_async()); worker_thread(); on_other_loop()
    start = sample()
    for _ in range(rounds):
        use_sync()
        worker_thread()
    for _ in range(rounds // 10):
        on_other_loop()
    async def many():
        for _ in range(rounds):
            await use_async()
            gc.collect() if _ % 100 == 0 else None
    asyncio.run(many())
    print(json.dumps({"start": start, "end": sample()}), flush=True)
    """
)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
def test_thousands_of_dropped_clients_neither_hang_nor_leak() -> None:
    with tempfile.TemporaryDirectory(prefix="hfd-l") as tmp:
        sock = Path(tmp) / "r.sock"
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(sock), "1000"],
            capture_output=True,
            text=True,
            timeout=240,  # a finalizer that hangs shows up here
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    (fds_start, threads_start), (fds_end, threads_end) = counts["start"], counts["end"]
    # Each client had its own context (an I/O thread, a few fds) and sockets: 3000 of them
    # leaked would be thousands of fds and threads.
    assert fds_end <= fds_start + 8, counts
    assert threads_end <= threads_start + 2, counts
