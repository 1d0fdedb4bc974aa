"""``Client`` and ``AsyncClient`` over the in-memory transport: request bodies, reply parsing,
streams and pulls, with a function in the daemon's place (no sockets). What needs a socket
(demultiplexing, reachability, finalizers) is tested over real ones in test_client_ipc.py."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from hfd.client import AsyncClient, Client
from hfd.client.errors import ContextLengthExceeded, DaemonUnavailable, ModelNotFound, ProtocolError, Timeout
from hfd.client.protocol import Reply, Request, decode_request, encode_reply
from hfd.client.transport import AsyncMemoryTransport, MemoryTransport

Script = Callable[[Request], Iterator[Reply | None]]


class Daemon:
    """A handler for the memory transports: decodes each request, records it, and replies by
    ``script``; ``cancelled`` lists the requests the client gave up before their final reply."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[Request] = []
        self.cancelled: list[str] = []

    def __call__(self, frames: list[bytes]) -> Iterator[list[bytes] | None]:
        req = decode_request(frames)
        self.received.append(req)
        final = False
        try:
            for reply in self.script(req):
                final = reply is not None and reply.final
                yield None if reply is None else encode_reply(reply)
        except GeneratorExit:
            if not final:  # (a generator collected after its final reply is closed too)
                self.cancelled.append(req.id)
            raise

    def body(self, op: str) -> dict[str, Any]:
        (req,) = [r for r in self.received if r.op == op]
        return req.body


def result(body: dict[str, Any]) -> Script:
    def script(req: Request) -> Iterator[Reply]:
        yield Reply(req.id, "result", body)

    return script


MODELS = {"data": [{"id": "chat", "task": "generate", "loaded": True}, {"id": "emb", "task": "embed"}]}


def chunk(text: str) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def streamed(req: Request) -> Iterator[Reply | None]:
    for text in ("a", "b"):
        yield Reply(req.id, "chunk", chunk(text))
    if req.body.get("messages") == [{"role": "user", "content": "long"}]:
        yield Reply(
            req.id, "error", {"code": "context_length_exceeded", "message": "too long", "param": "messages"}
        )
        return
    usage = {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    yield Reply(req.id, "end", {"usage": usage, "finish_reason": "stop"})


def one_chunk_then_silence(req: Request) -> Iterator[Reply | None]:
    yield Reply(req.id, "chunk", chunk("first"))
    yield None


def pulling(req: Request) -> Iterator[Reply]:
    for status in ("resolving", "downloading"):
        yield Reply(
            req.id, "event", {"ref": req.body["model"], "status": status, "completed": 5, "total": 10}
        )
    yield Reply(
        req.id, "result", {"model": req.body["model"], "repo": "org/m", "source": "hub", "path": "/s"}
    )


# ----------------------------------------------------------------------------- sync


def test_unary_replies_become_objects_and_unset_parameters_are_not_sent() -> None:
    daemon = Daemon(result(MODELS))
    with Client(transport=MemoryTransport(daemon)) as client:
        assert [m.id for m in client.models.list()] == ["chat", "emb"]
        assert client.models.retrieve("chat").loaded is True
        with pytest.raises(ModelNotFound) as info:
            client.models.retrieve("nope")
        assert info.value.param == "model"
    daemon = Daemon(result({"name": "chat", "task": "generate", "engine": "torch", "device": "cpu"}))
    with Client(transport=MemoryTransport(daemon)) as client:
        assert client.load("chat", keep_alive="5m").engine == "torch"
        client.load("chat")
    assert [r.body for r in daemon.received] == [{"model": "chat", "keep_alive": "5m"}, {"model": "chat"}]


def test_chat_request_body_and_reply() -> None:
    reply = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    daemon = Daemon(result(reply))
    client = Client(transport=MemoryTransport(daemon))
    out = client.chat.completions.create(
        model="m", messages=({"role": "user", "content": "x"},), temperature=0, seed=None, top_k=3
    )
    assert out.choices[0].message.content == "hi" and out.usage is not None and out.usage.total_tokens == 2
    assert daemon.body("chat.completions.create") == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "stream": False,
        "temperature": 0,
        "top_k": 3,
    }


def test_a_stream_yields_chunks_then_keeps_usage_and_an_error_raises_its_class() -> None:
    client = Client(transport=MemoryTransport(Daemon(streamed)))
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert [c.choices[0].delta.content for c in stream] == ["a", "b"]
    assert stream.usage is not None and stream.usage.total_tokens == 4 and stream.finish_reason == "stop"
    long = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "long"}], stream=True
    )
    with pytest.raises(ContextLengthExceeded):
        list(long)
    texts = client.completions.create(model="m", prompt=[1, 2], stream=True)
    assert [c.choices[0].text for c in texts] == ["", ""]  # completion chunks carry text, not deltas


def test_closing_a_stream_early_or_a_silence_cancels_it() -> None:
    daemon = Daemon(one_chunk_then_silence)
    client = Client(transport=MemoryTransport(daemon), timeout=0.01)
    with client.completions.create(model="m", prompt="x", stream=True) as stream:
        next(stream)
    stream = client.completions.create(model="m", prompt="x", stream=True)
    next(stream)
    with pytest.raises(Timeout, match="no data"):
        next(stream)
    with pytest.raises(Timeout, match=r"models\.ps"):
        Client(transport=MemoryTransport(daemon), timeout=0.01).ps()  # first reply: a chunk, then silence
    assert daemon.cancelled == [r.id for r in daemon.received]


def test_pull_reports_progress_and_a_failing_callback_cancels_it() -> None:
    daemon = Daemon(pulling)
    client = Client(transport=MemoryTransport(daemon))
    seen: list[str] = []
    pulled = client.pull("org/m", progress=lambda p: seen.append(p.status))
    assert seen == ["resolving", "downloading"] and pulled.source == "hub" and pulled.path == "/s"
    assert daemon.body("models.pull") == {"model": "org/m", "stream": True}

    def fail(_: object) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        client.pull("org/m", progress=fail)
    assert daemon.cancelled == [daemon.received[-1].id]


def test_embeddings_arrive_as_float32_arrays() -> None:
    def embed(req: Request) -> Iterator[Reply]:
        vectors = np.arange(len(req.body["input"]) * 4, dtype="<f4").reshape(-1, 4)
        body = {"model": req.body["model"], "shape": list(vectors.shape), "usage": {"prompt_tokens": 5}}
        yield Reply(req.id, "result", body, frames=[vectors.tobytes()])

    daemon = Daemon(embed)
    result = Client(transport=MemoryTransport(daemon)).embeddings.create(
        model="e", input=("one", "two", "three")
    )
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (3, 4)
    np.testing.assert_array_equal(result.data[2].embedding, [8, 9, 10, 11])
    assert result.model == "e" and result.usage is not None and result.usage.prompt_tokens == 5
    assert daemon.body("embeddings.create") == {"model": "e", "input": ["one", "two", "three"]}


def test_a_reply_stream_without_a_final_reply_or_a_closed_client_is_an_error() -> None:
    def nothing(req: Request) -> Iterator[Reply]:
        yield from ()

    client = Client(transport=MemoryTransport(Daemon(nothing)))
    with pytest.raises(ProtocolError, match="without a final reply"):
        client.health()
    client.close()
    with pytest.raises(DaemonUnavailable, match="closed"):
        client.health()


# ----------------------------------------------------------------------------- async


def test_async_client_shares_the_calls() -> None:
    async def main() -> None:
        daemon = Daemon(streamed)
        async with AsyncClient(transport=AsyncMemoryTransport(daemon)) as client:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
            assert [c.choices[0].delta.content async for c in stream] == ["a", "b"]
            assert stream.usage is not None and stream.finish_reason == "stop"
            early = await client.completions.create(model="m", prompt="x", stream=True)
            await early.__anext__()
            await early.aclose()
            assert daemon.cancelled == [daemon.received[-1].id]

        pulls = Daemon(pulling)
        async with AsyncClient(transport=AsyncMemoryTransport(pulls)) as client:
            seen: list[str] = []

            async def progress(p: Any) -> None:
                seen.append(p.status)

            assert (await client.pull("org/m", progress=progress)).repo == "org/m"
            assert seen == ["resolving", "downloading"]

        async with AsyncClient(transport=AsyncMemoryTransport(Daemon(result(MODELS)))) as client:
            assert (await client.models.retrieve("emb")).task == "embed"
            with pytest.raises(ModelNotFound):
                await client.models.retrieve("nope")

        async with AsyncClient(
            transport=AsyncMemoryTransport(Daemon(one_chunk_then_silence)), timeout=0.01
        ) as c:
            with pytest.raises(Timeout):
                await c.health()

    asyncio.run(main())


def test_methods_show_their_parameters_and_docs() -> None:
    for client in (
        Client(transport=MemoryTransport(Daemon(result({})))),
        AsyncClient(transport=AsyncMemoryTransport(Daemon(result({})))),
    ):
        assert list(inspect.signature(client.load).parameters) == ["model", "keep_alive", "timeout"]
        assert client.pull.__name__ == "pull" and "progress" in (client.pull.__doc__ or "")
        assert client.models.list.__name__ == "list"
