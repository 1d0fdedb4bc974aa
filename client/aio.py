"""The asyncio client: ``AsyncClient``, shaped like the OpenAI SDK's ``AsyncOpenAI``.

One DEALER socket per client and one receiver task that hands each reply to the queue of its
request id, so any number of tasks can have requests in flight at once. A request whose task
is cancelled, that times out, or a stream closed early sends ``cancel`` to the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, Literal, TypeVar, cast, overload

import zmq
import zmq.asyncio

from hfd.client._common import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    RequestIds,
    chat_body,
    completion_body,
    embeddings_body,
    expect_kind,
    not_answering,
    probe_socket,
)
from hfd.client.curve import HandshakeWatch, KeySource, curve_keys
from hfd.client.errors import DaemonUnavailable, HfdError, ModelNotFound, Timeout, error_from_dict
from hfd.client.paths import normalize_endpoint
from hfd.client.protocol import (
    KIND_CHUNK,
    KIND_END,
    KIND_ERROR,
    KIND_EVENT,
    KIND_RESULT,
    OP_CANCEL,
    OP_CHAT,
    OP_COMPLETIONS,
    OP_EMBEDDINGS,
    OP_HARDWARE,
    OP_HEALTH,
    OP_MODELS_LIST,
    OP_MODELS_LOAD,
    OP_MODELS_PS,
    OP_MODELS_UNLOAD,
    OP_PULL,
    OP_STATS,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from hfd.client.types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    EmbeddingResponse,
    Model,
    ModelList,
    PulledModel,
    PullProgress,
    RunningModel,
    Usage,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

KeepAlive = float | str | None
EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


async def _receive_loop(sock: zmq.asyncio.Socket, queues: dict[str, asyncio.Queue[Reply]]) -> None:
    """Hand each reply to the queue of its request. A plain function, not a method: a pending
    task that referred to the client would keep a dropped client (and its sockets) alive."""
    while True:
        try:
            frames = await sock.recv_multipart()
        except zmq.ZMQError:
            return  # socket closed
        try:
            reply = decode_reply(frames)
        except HfdError as exc:
            log.warning("dropping an unreadable reply", extra={"error": str(exc)})
            continue
        queue = queues.get(reply.id)
        if queue is not None:
            queue.put_nowait(reply)


class _AsyncSockets:
    """What an ``AsyncClient`` must close: its context, its socket, the receiver task and the
    handshake watch. No reference to the client, so the finalizer that closes them outlives it
    (see ``hfd.client.sync._Sockets`` for why a dropped client must close them itself)."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock: zmq.asyncio.Socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.receiver: asyncio.Task[None] | None = None
        self.watch: HandshakeWatch | None = None

    def drop_socket(self) -> None:
        """Close the socket and stop its receiver; never blocks, from any thread."""
        _on_loop(self.loop, self._detach())

    def close_all(self) -> None:
        close = self._detach()
        ctx = self.ctx

        def close_all() -> None:
            close()
            ctx.destroy(linger=0)  # every socket is closed: this does not wait

        _on_loop(self.loop, close_all)

    def _detach(self) -> Callable[[], None]:
        """Forget the socket, its receiver and watch; returns what closes them."""
        watch, receiver, sock = self.watch, self.receiver, self.sock
        self.watch = self.receiver = self.sock = None

        def close() -> None:
            if watch is not None:
                watch.close()
            if receiver is not None and not receiver.done():
                receiver.cancel()
            if sock is not None:
                with contextlib.suppress(Exception):  # e.g. its event loop is gone
                    sock.close(linger=0)

        return close


def _on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], None]) -> None:
    """Run ``fn`` now, or on ``loop`` when that loop runs in another thread (a garbage
    collection there): an asyncio socket and its task belong to their loop's thread."""
    if loop is not None and not loop.is_closed() and loop.is_running() and _running_loop() is not loop:
        with contextlib.suppress(RuntimeError):  # closed meanwhile: then close here
            loop.call_soon_threadsafe(fn)
            return
    fn()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class AsyncStream(Generic[T]):
    """Chunks of a streamed completion; ``aclose()`` (or leaving ``async with``) cancels it."""

    def __init__(
        self,
        client: AsyncClient,
        rid: str,
        queue: asyncio.Queue[Reply],
        parse: Callable[[dict[str, Any]], T],
        timeout: float | None,
    ) -> None:
        self._client = client
        self._rid = rid
        self._queue = queue
        self._parse = parse
        self._timeout = timeout
        self._done = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._done:
            try:
                reply = await asyncio.wait_for(self._queue.get(), self._timeout)
            except asyncio.TimeoutError:
                self._finish(cancel=True)
                raise Timeout(
                    f"no data from the daemon for {self._timeout:g}s; the request was cancelled"
                ) from None
            except asyncio.CancelledError:
                self._finish(cancel=True)
                raise
            if reply.final:
                self._finish(cancel=False)
            if reply.kind == KIND_CHUNK:
                return self._parse(reply.body)
            if reply.kind == KIND_END:
                self.usage = Usage.from_dict(reply.body.get("usage"))
                self.finish_reason = reply.body.get("finish_reason")
            elif reply.kind == KIND_ERROR:
                raise error_from_dict(reply.body)
        raise StopAsyncIteration

    def _finish(self, *, cancel: bool) -> None:
        if self._done:
            return
        self._done = True
        self._client._forget(self._rid)
        if cancel:
            self._client._cancel(self._rid)

    async def aclose(self) -> None:
        self._finish(cancel=True)

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            with contextlib.suppress(Exception):
                self._client._cancel_threadsafe(self._rid)


class AsyncClient:
    """An asyncio client for the daemon's IPC socket; see ``hfd.client.Client`` for arguments."""

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        curve_server_key: KeySource | None = None,
        curve_public_key: KeySource | None = None,
        curve_secret_key: KeySource | None = None,
    ) -> None:
        self.endpoint = normalize_endpoint(path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._curve = curve_keys(curve_server_key, curve_public_key, curve_secret_key)
        self._res = _AsyncSockets()
        # A client dropped without close() closes its socket and context when collected.
        self._finalizer = weakref.finalize(self, self._res.close_all)
        self._queues: dict[str, asyncio.Queue[Reply]] = {}
        self._ids = RequestIds()
        self._checked = False
        self._check_lock: asyncio.Lock | None = None
        self._closed = False
        self.models = AsyncModels(self)
        self.embeddings = AsyncEmbeddings(self)
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)

    # ----------------------------------------------------------------- plumbing

    def _socket(self) -> zmq.asyncio.Socket:
        if self._closed:
            raise DaemonUnavailable("this client is closed")
        loop = asyncio.get_running_loop()
        res = self._res
        if res.sock is None or res.loop is not loop:
            # A socket and its receiver belong to one event loop; a new loop gets new ones.
            self._drop_socket()
            sock = res.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            res.sock, res.loop = sock, loop
            if self._curve is not None:
                self._curve.apply(sock)
                res.watch = HandshakeWatch(sock)  # before connect: the first handshake counts
            sock.connect(self.endpoint)
            self._check_lock = asyncio.Lock()
            res.receiver = loop.create_task(_receive_loop(sock, self._queues))
        return res.sock

    async def _ready(self) -> zmq.asyncio.Socket:
        sock = self._socket()
        if not self._checked:
            assert self._check_lock is not None
            async with self._check_lock:
                if not self._checked:
                    probe_socket(self.endpoint)
                    try:
                        await self._roundtrip(sock, OP_HEALTH, {}, self.connect_timeout, connect=True)
                    except DaemonUnavailable as exc:
                        if self._res.watch is not None:
                            raise self._res.watch.explain(self.endpoint, exc) from None
                        raise
                    self._stop_watching()
                    self._checked = True
        return sock

    async def _send(
        self, sock: zmq.asyncio.Socket, rid: str, op: str, body: dict[str, Any], timeout: float | None
    ) -> None:
        wait = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
        # The stubs miss poll's flags argument, which zmq.asyncio has.
        if not await sock.poll(int(wait * 1000), zmq.POLLOUT):  # type: ignore[call-arg]
            raise not_answering(self.endpoint, wait)
        await sock.send_multipart(encode_request(Request(id=rid, op=op, body=body)))

    async def _roundtrip(
        self,
        sock: zmq.asyncio.Socket,
        op: str,
        body: dict[str, Any],
        timeout: float | None,
        *,
        connect: bool = False,
        on_event: EventHandler | None = None,
    ) -> Reply:
        """Send one request and wait for its final reply; ``event`` replies before it go to
        ``on_event`` (an exception there cancels the request). ``timeout`` bounds each wait."""
        rid = self._ids.next()
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._queues[rid] = queue
        try:
            await self._send(sock, rid, op, body, timeout)
            while True:
                try:
                    reply = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    self._cancel(rid)
                    if connect:
                        raise not_answering(self.endpoint, timeout or 0.0) from None
                    raise Timeout(
                        f"{op}: nothing from the daemon for {timeout:g}s; the request was cancelled"
                    ) from None
                except asyncio.CancelledError:
                    self._cancel(rid)
                    raise
                if reply.final:
                    return expect_kind(reply, KIND_RESULT)
                if reply.kind == KIND_EVENT and on_event is not None:
                    try:
                        await on_event(reply.body)
                    except BaseException:
                        self._cancel(rid)
                        raise
        finally:
            self._forget(rid)

    async def _request(
        self,
        op: str,
        body: dict[str, Any],
        timeout: float | None = None,
        *,
        on_event: EventHandler | None = None,
    ) -> Reply:
        sock = await self._ready()
        return await self._roundtrip(
            sock, op, body, self.timeout if timeout is None else timeout, on_event=on_event
        )

    async def _stream(
        self, op: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], T], timeout: float | None
    ) -> AsyncStream[T]:
        sock = await self._ready()
        timeout = self.timeout if timeout is None else timeout
        rid = self._ids.next()
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._queues[rid] = queue
        try:
            await self._send(sock, rid, op, body, timeout)
        except BaseException:
            self._forget(rid)
            raise
        return AsyncStream(self, rid, queue, parse, timeout)

    def _forget(self, rid: str) -> None:
        self._queues.pop(rid, None)

    def _cancel(self, rid: str) -> None:
        """Tell the daemon to stop ``rid``; fire and forget (called from the client's loop)."""
        self._forget(rid)
        sock = self._res.sock
        if sock is None or sock.closed:
            return
        frames = encode_request(Request(id=f"{rid}.cancel", op=OP_CANCEL, body={"id": rid}))
        try:
            future = cast("asyncio.Future[Any]", sock.send_multipart(frames))
        except zmq.ZMQError:
            return
        # Fetch a failure, so it is not reported as never retrieved: the daemon also notices.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _cancel_threadsafe(self, rid: str) -> None:
        loop = self._res.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel, rid)

    def _stop_watching(self) -> None:
        if self._res.watch is not None:
            self._res.watch.close()
            self._res.watch = None

    def _drop_socket(self) -> None:
        self._res.drop_socket()
        self._queues.clear()
        self._checked = False

    # ----------------------------------------------------------------- admin

    async def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        return (await self._request(OP_HEALTH, {}, timeout)).body

    async def ps(self, *, timeout: float | None = None) -> list[RunningModel]:
        body = (await self._request(OP_MODELS_PS, {}, timeout)).body
        return [RunningModel.from_dict(m) for m in body.get("models", [])]

    async def load(
        self, model: str, *, keep_alive: KeepAlive = None, timeout: float | None = None
    ) -> RunningModel:
        """Load ``model`` now; ``keep_alive`` as in ``Client.load``."""
        body: dict[str, Any] = {"model": model}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return RunningModel.from_dict((await self._request(OP_MODELS_LOAD, body, timeout)).body)

    async def unload(self, model: str, *, timeout: float | None = None) -> bool:
        return bool((await self._request(OP_MODELS_UNLOAD, {"model": model}, timeout)).body.get("unloaded"))

    async def hardware(self, *, timeout: float | None = None) -> dict[str, Any]:
        return (await self._request(OP_HARDWARE, {}, timeout)).body

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The daemon's counters, as ``Client.stats``. Needs ``admin``."""
        return (await self._request(OP_STATS, {}, timeout)).body

    async def pull(
        self,
        model: str,
        *,
        progress: Callable[[PullProgress], object] | None = None,
        timeout: float | None = None,
    ) -> PulledModel:
        """Pull ``model`` into the daemon's store, as ``Client.pull``; ``progress`` may be a
        plain function or a coroutine function. Cancelling the awaiting task cancels the pull."""

        async def on_event(body: dict[str, Any]) -> None:
            if progress is not None:
                outcome = progress(PullProgress.from_dict(body))
                if inspect.isawaitable(outcome):
                    await outcome

        reply = await self._request(OP_PULL, {"model": model, "stream": True}, timeout, on_event=on_event)
        return PulledModel.from_dict(reply.body)

    # ----------------------------------------------------------------- lifetime

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._queues.clear()
        self._closed = True
        self._finalizer()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncModels:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, *, timeout: float | None = None) -> ModelList:
        return ModelList.from_dict((await self._client._request(OP_MODELS_LIST, {}, timeout)).body)

    async def retrieve(self, model: str, *, timeout: float | None = None) -> Model:
        for m in (await self.list(timeout=timeout)).data:
            if m.id == model:
                return m
        raise ModelNotFound(f"model {model!r} is not served here", param="model")


class AsyncEmbeddings:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        input: str | Iterable[str],
        dimensions: int | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> EmbeddingResponse:
        texts = input if isinstance(input, str) else list(input)
        body = embeddings_body(model, texts, {"dimensions": dimensions, **extra})
        reply = await self._client._request(OP_EMBEDDINGS, body, timeout)
        return EmbeddingResponse.from_reply(reply.body, reply.frames)


class AsyncChatCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: Literal[False] = False,
        **params: Any,
    ) -> ChatCompletion: ...
    @overload
    async def create(
        self, *, model: str, messages: Iterable[Mapping[str, Any]], stream: Literal[True], **params: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        params = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": stop,
            **extra,
        }
        body = chat_body(model, messages, stream, params)
        if stream:
            return await self._client._stream(OP_CHAT, body, ChatCompletionChunk.from_dict, timeout)
        return ChatCompletion.from_dict((await self._client._request(OP_CHAT, body, timeout)).body)


class AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = AsyncChatCompletions(client)


class AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self, *, model: str, prompt: str | list[int], stream: Literal[False] = False, **params: Any
    ) -> Completion: ...
    @overload
    async def create(
        self, *, model: str, prompt: str | list[int], stream: Literal[True], **params: Any
    ) -> AsyncStream[Completion]: ...

    async def create(
        self,
        *,
        model: str,
        prompt: str | list[int],
        stream: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> Completion | AsyncStream[Completion]:
        params = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": stop,
            **extra,
        }
        body = completion_body(model, prompt, stream, params)
        if stream:
            return await self._client._stream(OP_COMPLETIONS, body, Completion.from_dict, timeout)
        return Completion.from_dict((await self._client._request(OP_COMPLETIONS, body, timeout)).body)
