"""The transport seam: what ``Client(transport=...)`` and ``AsyncClient(transport=...)`` take.

A transport carries one request out and its replies back; the clients build the requests and
read the replies (``hfd.client._calls``). The default is ZeroMQ (``hfd.client.zmq_sync``,
``hfd.client.zmq_async``). ``MemoryTransport`` and ``AsyncMemoryTransport`` hand each
request's frames to a function instead, so code using the client can be tested without a
daemon::

    def daemon(frames):
        req = decode_request(frames)
        yield encode_reply(Reply(req.id, "result", {"status": "ok"}))

    Client(transport=MemoryTransport(daemon)).health()

The handler (a plain generator for both clients) yields each reply's frames in order. A yielded ``None`` stands for silence: the client's wait for that reply
times out. A request the client gives up (a stream closed early, a timeout) closes the
handler's generator, so a handler sees its cancellation as ``GeneratorExit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from hfd.client.errors import DaemonUnavailable, ProtocolError
from hfd.client.protocol import Reply, Request, decode_reply, encode_request

ReplyFrames = list[bytes] | None
Handler = Callable[[list[bytes]], Iterable[ReplyFrames]]


class Exchange(Protocol):
    """One request in flight on a blocking transport."""

    def receive(self, timeout: float | None) -> Reply | None:
        """The next reply, or None when none came within ``timeout`` seconds."""

    def close(self) -> None:
        """Done with it: cancels the request on the daemon unless its final reply came."""

    def close_from_anywhere(self) -> None:
        """``close`` from a finalizer, in any thread, without waiting."""


class Transport(Protocol):
    def open(self, request: Request, timeout: float | None) -> Exchange:
        """Send ``request``; raises ``DaemonUnavailable`` when it cannot be delivered."""

    def close(self) -> None: ...


class AsyncExchange(Protocol):
    """One request in flight on an asyncio transport."""

    async def receive(self, timeout: float | None) -> Reply | None: ...

    def close(self) -> None:
        """Done with it (from the client's event loop): cancels it unless it ended."""

    def close_from_anywhere(self) -> None:
        """``close`` from a finalizer, in any thread, without waiting."""


class AsyncTransport(Protocol):
    async def open(self, request: Request, timeout: float | None) -> AsyncExchange: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- in memory


class _MemoryExchange:
    def __init__(self, rid: str, replies: Iterable[ReplyFrames]) -> None:
        self._rid = rid
        self._replies = replies
        self._iter: Iterator[ReplyFrames] | None = None
        self._ended = False
        self._closed = False

    def _reply(self, frames: ReplyFrames) -> Reply | None:
        if frames is None:
            return None
        reply = decode_reply(frames)
        if reply.id != self._rid:
            raise ProtocolError(f"reply for {reply.id!r} to request {self._rid!r}")
        self._ended = reply.final
        return reply

    def _cut_short(self) -> ProtocolError:
        self._ended = True
        return ProtocolError(f"the handler ended request {self._rid!r} without a final reply")

    def receive(self, timeout: float | None) -> Reply | None:
        if self._iter is None:
            self._iter = iter(self._replies)
        try:
            return self._reply(next(self._iter))
        except StopIteration:
            raise self._cut_short() from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._ended:
            close: Any = getattr(self._iter or self._replies, "close", None)
            if close is not None:
                close()  # a generator: the handler sees GeneratorExit

    def close_from_anywhere(self) -> None:
        self.close()


class _AsyncMemoryExchange:
    def __init__(self, exchange: _MemoryExchange) -> None:
        self._exchange = exchange

    async def receive(self, timeout: float | None) -> Reply | None:
        return self._exchange.receive(timeout)

    def close(self) -> None:
        self._exchange.close()

    def close_from_anywhere(self) -> None:
        self.close()


class MemoryTransport:
    """A ``Transport`` that answers each request by calling ``handler(frames)``."""

    endpoint = "memory://"

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.closed = False

    def open(self, request: Request, timeout: float | None) -> _MemoryExchange:
        if self.closed:
            raise DaemonUnavailable("this client is closed")
        return _MemoryExchange(request.id, self.handler(encode_request(request)))

    def close(self) -> None:
        self.closed = True


class AsyncMemoryTransport:
    """An ``AsyncTransport`` that answers each request by calling ``handler(frames)``."""

    endpoint = "memory://"

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.closed = False

    async def open(self, request: Request, timeout: float | None) -> _AsyncMemoryExchange:
        if self.closed:
            raise DaemonUnavailable("this client is closed")
        return _AsyncMemoryExchange(_MemoryExchange(request.id, self.handler(encode_request(request))))

    def close(self) -> None:
        self.closed = True
