"""The asyncio client: ``AsyncClient``, shaped like the OpenAI SDK's ``AsyncOpenAI``.

Its methods are defined once for both clients (``hfd.client._resources``); what is here is
how an asyncio client waits for replies. The socket code is the transport's
(``hfd.client.zmq_async`` by default, see ``hfd.client.transport``). A request whose task is
cancelled, that times out, or a stream closed early is cancelled on the daemon.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Generic, TypeVar

from hfd.client import _calls as calls
from hfd.client._common import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, RequestIds
from hfd.client._resources import Admin, Async, Chat, Completions, Embeddings, Models
from hfd.client.curve import KeySource, curve_keys
from hfd.client.paths import normalize_endpoint
from hfd.client.protocol import Request
from hfd.client.transport import AsyncExchange, AsyncTransport
from hfd.client.types import Usage
from hfd.client.zmq_async import AsyncZmqTransport

T = TypeVar("T")


class AsyncStream(Generic[T]):
    """Chunks of a streamed completion; ``aclose()`` (or leaving ``async with``) cancels it."""

    def __init__(self, exchange: AsyncExchange, call: calls.Call[T], timeout: float | None) -> None:
        self._exchange = exchange  # it keeps the transport (and its socket) alive
        self._reader = calls.StreamReader(call.parse)
        self._timeout = timeout
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return self._reader.usage

    @property
    def finish_reason(self) -> str | None:
        return self._reader.finish_reason

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._done:
            try:
                reply = await self._exchange.receive(self._timeout)
            except BaseException:  # the reading task was cancelled
                self._finish()
                raise
            if reply is None:
                self._finish()
                raise calls.stream_timed_out(self._timeout)
            if reply.final:
                self._finish()
            item = self._reader.feed(reply)
            if item is not None:
                return item
        raise StopAsyncIteration

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._exchange.close()  # cancels it on the daemon unless it ended

    async def aclose(self) -> None:
        self._finish()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            with contextlib.suppress(Exception):
                self._exchange.close_from_anywhere()


class AsyncClient(Admin[Async]):
    """An asyncio client for the daemon's IPC socket; see ``hfd.client.Client`` for arguments
    (``transport``: an ``hfd.client.transport.AsyncTransport``)."""

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        curve_server_key: KeySource | None = None,
        curve_public_key: KeySource | None = None,
        curve_secret_key: KeySource | None = None,
        transport: AsyncTransport | None = None,
    ) -> None:
        super().__init__(self._call)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        if transport is None:
            self.endpoint = normalize_endpoint(path)
            curve = curve_keys(curve_server_key, curve_public_key, curve_secret_key)
            transport = AsyncZmqTransport(self.endpoint, connect_timeout=connect_timeout, curve=curve)
        else:
            self.endpoint = str(getattr(transport, "endpoint", "custom"))
        self._transport = transport
        self._ids = RequestIds()
        self.models: Models[Async] = Models(self._run)
        self.embeddings: Embeddings[Async] = Embeddings(self._run)
        self.chat: Chat[Async] = Chat(self._run)
        self.completions: Completions[Async] = Completions(self._run)

    async def _call(self, call: calls.Call[T]) -> Any:
        """Perform ``call``: its value, or an ``AsyncStream`` of its chunks."""
        timeout = self.timeout if call.timeout is None else call.timeout
        request = Request(id=self._ids.next(), op=call.op, body=call.body, frames=call.frames)
        exchange = await self._transport.open(request, timeout)
        if call.kind == calls.STREAM:
            return AsyncStream(exchange, call, timeout)
        try:
            while True:
                reply = await exchange.receive(timeout)
                if reply is None:
                    raise calls.timed_out(call.op, timeout)
                if reply.final:
                    return calls.result(call, reply)
                event = calls.pull_event(reply)
                if event is not None:
                    outcome = call.progress(event)
                    if inspect.isawaitable(outcome):
                        await outcome
        finally:
            exchange.close()  # cancels it on the daemon unless it ended (or the task is cancelled)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
