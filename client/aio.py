"""The asyncio client: ``AsyncClient``, shaped like the OpenAI SDK's ``AsyncOpenAI``.

Its methods are defined once for both clients (``hfd.client._resources``); what is here is
how an asyncio client waits for replies. The socket code is the transport's
(``hfd.client.zmq_async`` by default, see ``hfd.client.transport``). A request whose task is
cancelled, that times out, or a stream closed early is cancelled on the daemon.
"""

from __future__ import annotations

import inspect
from contextlib import closing
from typing import Any, TypeVar

from hfd.client import _calls as calls
from hfd.client._resources import Async, ClientBase
from hfd.client.transport import AsyncExchange, AsyncTransport
from hfd.client.zmq_async import AsyncZmqTransport

T = TypeVar("T")


class AsyncStream(calls.StreamBase[T]):
    """Chunks of a streamed completion; ``aclose()`` (or leaving ``async with``) cancels it."""

    _exchange: AsyncExchange

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._done:
            try:
                reply = await self._exchange.receive(self._timeout)
            except BaseException:  # the reading task was cancelled
                self._finish()
                raise
            item = self._take(reply)
            if item is not None:
                return item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._finish()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient(ClientBase[Async, AsyncTransport]):
    """An asyncio client for the daemon's IPC socket; see ``hfd.client.Client`` for arguments
    (``transport``: an ``hfd.client.transport.AsyncTransport``)."""

    _default_transport = AsyncZmqTransport

    async def _call(self, call: calls.Call[T]) -> Any:
        """Perform ``call``: its value, or an ``AsyncStream`` of its chunks."""
        request, timeout = self._request(call)
        exchange = await self._transport.open(request, timeout)
        if call.kind == calls.STREAM:
            return AsyncStream(exchange, call, timeout)
        # Closing cancels it on the daemon unless it ended (a timeout, the task cancelled).
        with closing(exchange):
            while True:
                final, value = calls.outcome(call, await exchange.receive(timeout), timeout)
                if final:
                    return value
                if value is not None and inspect.isawaitable(pending := call.progress(value)):
                    await pending  # progress may be a coroutine function

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
