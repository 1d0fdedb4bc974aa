"""The blocking client: ``Client``, shaped like the OpenAI SDK's.

Thread-safety: each thread gets its own DEALER socket (a ``_Channel``), created on first use,
so threads never wait on each other. A channel has a lock because a stream may be read, or
closed by the garbage collector, from a thread other than the one that opened it; ZeroMQ
sockets may move between threads as long as accesses are serialised.

Several requests may be in flight on one channel (e.g. two streams read alternately): replies
carry the request id, and a reply for another open request is parked until that one reads it.

Over TCP the daemon only takes CURVE clients: give the keys (``hfd.client.curve``) and every
channel's socket is set up with them before it connects.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar, overload

import zmq

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
from hfd.client.curve import CurveKeys, HandshakeWatch, KeySource, curve_keys
from hfd.client.errors import DaemonUnavailable, ModelNotFound, Timeout, error_from_dict
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

T = TypeVar("T")

KeepAlive = float | str | None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(0, int(seconds * 1000))


class _Sockets:
    """What a ``Client`` must close: its context and its channels' sockets.

    It holds no reference to the client, so the finalizer that closes them outlives it. A
    dropped client must close its sockets itself before its context ends: left to the garbage
    collector, the context's own finalizer may run first and ``term()`` then waits for ever on
    sockets that are still open (weak references to them are already cleared).
    """

    def __init__(self) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # Re-entrant: a garbage collection inside a locked block may run a finalizer here.
        self._lock = threading.RLock()
        self._open: dict[int, tuple[zmq.Socket[bytes], HandshakeWatch | None]] = {}
        self._keys = itertools.count()

    def add(self, sock: zmq.Socket[bytes], watch: HandshakeWatch | None) -> int:
        key = next(self._keys)
        with self._lock:
            self._open[key] = (sock, watch)
        return key

    def release(self, key: int) -> None:
        """Close one channel's sockets (it was closed or collected); never blocks."""
        with self._lock:
            entry = self._open.pop(key, None)
        if entry is not None:
            _close_quietly(*entry)

    def close_all(self) -> None:
        """Close every socket without waiting for unsent messages, then the context."""
        with self._lock:
            entries, self._open = list(self._open.values()), {}
        for entry in entries:
            _close_quietly(*entry)
        # Every socket is closed, so this does not wait.
        self.ctx.destroy(linger=0)


def _close_quietly(sock: zmq.Socket[bytes], watch: HandshakeWatch | None) -> None:
    if watch is not None:
        watch.close()
    sock.close(linger=0)


class _Channel:
    """One DEALER socket and the replies parked for its open requests."""

    def __init__(
        self,
        sockets: _Sockets,
        endpoint: str,
        curve: CurveKeys | None = None,
        *,
        watch: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.sock: zmq.Socket[bytes] = sockets.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # Queue messages only on a finished connection: a send then tells whether the daemon
        # is there instead of piling up for one that never comes.
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.watch: HandshakeWatch | None = None
        if curve is not None:
            curve.apply(self.sock)
            if watch:  # before connect, so the first handshake is seen
                self.watch = HandshakeWatch(self.sock)
        self.sock.connect(endpoint)
        self.parked: dict[str, deque[Reply]] = {}
        self.deferred_cancels: deque[str] = deque()
        # A channel dropped with its thread (or its client) closes its sockets; so does close().
        self._release = weakref.finalize(self, sockets.release, sockets.add(self.sock, self.watch))

    def send(self, frames: list[bytes], timeout: float | None) -> bool:
        """False when the daemon cannot take the message within ``timeout``."""
        self._flush_cancels()
        if not self.sock.poll(_ms(timeout), zmq.POLLOUT):
            return False
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def receive(self, rid: str, timeout: float | None) -> Reply | None:
        """The next reply to ``rid``, or None when none came within ``timeout``."""
        queue = self.parked.get(rid)
        if queue:
            return queue.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if not self.sock.poll(_ms(remaining), zmq.POLLIN):
                return None
            reply = decode_reply(self.sock.recv_multipart())
            if reply.id == rid:
                return reply
            other = self.parked.get(reply.id)
            if other is not None:
                other.append(reply)
            # Otherwise it belongs to a request already given up (a closed stream): drop it.

    def cancel(self, rid: str) -> None:
        self.parked.pop(rid, None)
        frames = encode_request(Request(id=f"{rid}.cancel", op=OP_CANCEL, body={"id": rid}))
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected or closed: the daemon notices the gone client itself

    def cancel_from_anywhere(self, rid: str) -> None:
        """Cancel without waiting: now if the socket is free, else on its next use."""
        if self.lock.acquire(blocking=False):
            try:
                self.cancel(rid)
            finally:
                self.lock.release()
        else:
            self.deferred_cancels.append(rid)

    def _flush_cancels(self) -> None:
        while self.deferred_cancels:
            self.cancel(self.deferred_cancels.popleft())

    def stop_watching(self) -> None:
        if self.watch is not None:
            self.watch.close()  # the finalizer's reference to it is closed too: close is idempotent
            self.watch = None

    def close(self) -> None:
        self.stop_watching()
        self._release()


class Stream(Generic[T]):
    """Chunks of a streamed completion. Closing it early (or dropping it) cancels the request.

    ``usage`` holds the token counts once the stream has ended.
    """

    def __init__(
        self,
        client: Client,
        channel: _Channel,
        rid: str,
        parse: Callable[[dict[str, Any]], T],
        timeout: float | None,
    ) -> None:
        self._client = client  # the client (and its sockets) live as long as its streams
        self._channel = channel
        self._rid = rid
        self._parse = parse
        self._timeout = timeout
        self._done = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while not self._done:
            with self._channel.lock:
                reply = self._channel.receive(self._rid, self._timeout)
                if reply is None:
                    self._done = True
                    self._channel.cancel(self._rid)
                    raise Timeout(
                        f"no data from the daemon for {self._timeout:g}s; the request was cancelled"
                    )
                if reply.final:
                    self._done = True
                    self._channel.parked.pop(self._rid, None)
            if reply.kind == KIND_CHUNK:
                return self._parse(reply.body)
            if reply.kind == KIND_END:
                self.usage = Usage.from_dict(reply.body.get("usage"))
                self.finish_reason = reply.body.get("finish_reason")
            elif reply.kind == KIND_ERROR:
                raise error_from_dict(reply.body)
        raise StopIteration

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        with self._channel.lock:
            self._channel.cancel(self._rid)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            try:
                self._channel.cancel_from_anywhere(self._rid)
            except Exception:
                pass  # interpreter shutdown: the daemon cancels streams of gone clients


class Client:
    """A blocking client for the daemon's IPC socket.

    ``path``: the socket path or an ``ipc://`` endpoint (default: where the daemon binds by
    default, see ``hfd.client.paths``), or the ``tcp://host:port`` of a daemon's ``ipc_tcp``.
    ``timeout``: seconds a request (or, for a stream, each chunk; for a pull, each progress
    event) may take before ``Timeout``; the request is then cancelled on the daemon.

    ``curve_server_key``, ``curve_public_key``, ``curve_secret_key``: CURVE keys for a
    ``tcp://`` endpoint, each a Z85 string or a key file (see ``hfd.client.curve``); the public
    key may be left out. A refused key raises ``Unauthorized`` on the first request.
    """

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
        self._sockets = _Sockets()
        # A client dropped without close() closes its sockets and context when collected.
        self._finalizer = weakref.finalize(self, self._sockets.close_all)
        self._local = threading.local()
        self._channels: weakref.WeakSet[_Channel] = weakref.WeakSet()
        self._channels_lock = threading.Lock()
        self._ids = RequestIds()
        self._checked = False
        self._closed = False
        self.models = Models(self)
        self.embeddings = Embeddings(self)
        self.chat = Chat(self)
        self.completions = Completions(self)

    # ----------------------------------------------------------------- plumbing

    def _channel(self) -> _Channel:
        if self._closed:
            raise DaemonUnavailable("this client is closed")
        channel: _Channel | None = getattr(self._local, "channel", None)
        if channel is None:
            channel = _Channel(self._sockets, self.endpoint, self._curve, watch=not self._checked)
            self._local.channel = channel
            with self._channels_lock:
                self._channels.add(channel)
        if not self._checked:
            self._check(channel)
        return channel

    def _check(self, channel: _Channel) -> None:
        """The first request makes sure a daemon answers, so a missing one fails fast."""
        probe_socket(self.endpoint)
        try:
            self._roundtrip(channel, OP_HEALTH, {}, [], self.connect_timeout, connect=True)
        except DaemonUnavailable as exc:
            if channel.watch is not None:
                raise channel.watch.explain(self.endpoint, exc) from None
            raise
        channel.stop_watching()
        self._checked = True

    def _roundtrip(
        self,
        channel: _Channel,
        op: str,
        body: dict[str, Any],
        frames: list[bytes],
        timeout: float | None,
        *,
        connect: bool = False,
    ) -> Reply:
        rid = self._ids.next()
        with channel.lock:
            channel.parked[rid] = deque()
            try:
                send_timeout = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
                if not channel.send(
                    encode_request(Request(id=rid, op=op, body=body, frames=frames)), send_timeout
                ):
                    raise not_answering(self.endpoint, send_timeout)
                while True:
                    reply = channel.receive(rid, timeout)
                    if reply is None:
                        channel.cancel(rid)
                        if connect:
                            raise not_answering(self.endpoint, timeout or 0.0)
                        raise Timeout(
                            f"{op}: no reply from the daemon within {timeout:g}s; the request was cancelled"
                        )
                    if reply.final:
                        return expect_kind(reply, KIND_RESULT)
            finally:
                channel.parked.pop(rid, None)

    def _request(
        self, op: str, body: dict[str, Any], timeout: float | None = None, frames: list[bytes] | None = None
    ) -> Reply:
        return self._roundtrip(
            self._channel(), op, body, frames or [], self.timeout if timeout is None else timeout
        )

    def _stream(
        self, op: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], T], timeout: float | None
    ) -> Stream[T]:
        channel = self._channel()
        rid = self._ids.next()
        timeout = self.timeout if timeout is None else timeout
        with channel.lock:
            channel.parked[rid] = deque()
            send_timeout = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
            if not channel.send(encode_request(Request(id=rid, op=op, body=body)), send_timeout):
                channel.parked.pop(rid, None)
                raise not_answering(self.endpoint, send_timeout)
        return Stream(self, channel, rid, parse, timeout)

    # ----------------------------------------------------------------- admin

    def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._request(OP_HEALTH, {}, timeout).body

    def ps(self, *, timeout: float | None = None) -> list[RunningModel]:
        body = self._request(OP_MODELS_PS, {}, timeout).body
        return [RunningModel.from_dict(m) for m in body.get("models", [])]

    def load(self, model: str, *, keep_alive: KeepAlive = None, timeout: float | None = None) -> RunningModel:
        """Load ``model`` now. ``keep_alive``: how long it stays loaded when idle, in seconds or
        as a duration ("5m", "1h"); negative keeps it loaded, 0 unloads it once idle."""
        body: dict[str, Any] = {"model": model}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return RunningModel.from_dict(self._request(OP_MODELS_LOAD, body, timeout).body)

    def unload(self, model: str, *, timeout: float | None = None) -> bool:
        return bool(self._request(OP_MODELS_UNLOAD, {"model": model}, timeout).body.get("unloaded"))

    def hardware(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._request(OP_HARDWARE, {}, timeout).body

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The daemon's counters: ``{"cache": {...}, "models": {...}}`` (response cache hits and
        misses, loads and evictions, memory pools, open circuit breakers). Needs ``admin``."""
        return self._request(OP_STATS, {}, timeout).body

    def pull(
        self,
        model: str,
        *,
        progress: Callable[[PullProgress], object] | None = None,
        timeout: float | None = None,
    ) -> PulledModel:
        """Pull ``model`` (``org/name[@revision]``, ``ipfs://<cid>`` or an alias) into the
        daemon's store; ``progress`` is called with each progress event, in this thread.

        ``timeout`` bounds the wait for each event (the daemon repeats the last one every few
        seconds while nothing moves), not the whole pull. A timeout, or an exception from
        ``progress``, cancels the pull on the daemon.
        """
        channel = self._channel()
        timeout = self.timeout if timeout is None else timeout
        rid = self._ids.next()
        with channel.lock:
            channel.parked[rid] = deque()
            send_timeout = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
            frames = encode_request(Request(id=rid, op=OP_PULL, body={"model": model, "stream": True}))
            if not channel.send(frames, send_timeout):
                channel.parked.pop(rid, None)
                raise not_answering(self.endpoint, send_timeout)
        done = False
        try:
            while True:
                # The lock is held only to read, so ``progress`` may use this client too.
                with channel.lock:
                    reply = channel.receive(rid, timeout)
                if reply is None:
                    raise Timeout(
                        f"{OP_PULL}: nothing from the daemon for {timeout:g}s; the pull was cancelled"
                    )
                if reply.final:
                    done = True
                    return PulledModel.from_dict(expect_kind(reply, KIND_RESULT).body)
                if reply.kind == KIND_EVENT and progress is not None:
                    progress(PullProgress.from_dict(reply.body))
        finally:
            with channel.lock:
                channel.parked.pop(rid, None)
                if not done:
                    channel.cancel(rid)

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._channels_lock:
            channels = list(self._channels)
        for channel in channels:
            with channel.lock:  # not while another thread is reading a stream on it
                channel.close()
        self._finalizer()  # whatever is left (sockets of ended threads), then the context

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Models:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, timeout: float | None = None) -> ModelList:
        return ModelList.from_dict(self._client._request(OP_MODELS_LIST, {}, timeout).body)

    def retrieve(self, model: str, *, timeout: float | None = None) -> Model:
        for m in self.list(timeout=timeout).data:
            if m.id == model:
                return m
        raise ModelNotFound(f"model {model!r} is not served here", param="model")


class Embeddings:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
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
        reply = self._client._request(OP_EMBEDDINGS, body, timeout)
        return EmbeddingResponse.from_reply(reply.body, reply.frames)


class ChatCompletions:
    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        stream: Literal[False] = False,
        **params: Any,
    ) -> ChatCompletion: ...
    @overload
    def create(
        self, *, model: str, messages: Iterable[Mapping[str, Any]], stream: Literal[True], **params: Any
    ) -> Stream[ChatCompletionChunk]: ...

    def create(
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
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
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
            return self._client._stream(OP_CHAT, body, ChatCompletionChunk.from_dict, timeout)
        return ChatCompletion.from_dict(self._client._request(OP_CHAT, body, timeout).body)


class Chat:
    def __init__(self, client: Client) -> None:
        self.completions = ChatCompletions(client)


class Completions:
    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self, *, model: str, prompt: str | list[int], stream: Literal[False] = False, **params: Any
    ) -> Completion: ...
    @overload
    def create(
        self, *, model: str, prompt: str | list[int], stream: Literal[True], **params: Any
    ) -> Stream[Completion]: ...

    def create(
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
    ) -> Completion | Stream[Completion]:
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
            return self._client._stream(OP_COMPLETIONS, body, Completion.from_dict, timeout)
        return Completion.from_dict(self._client._request(OP_COMPLETIONS, body, timeout).body)
