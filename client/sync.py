"""The blocking client: ``Client``, shaped like the OpenAI SDK's.

Its methods are defined once for both clients (``hfd.client._resources``); what is here is
how a blocking client waits for replies. The socket code is the transport's
(``hfd.client.zmq_sync`` by default, see ``hfd.client.transport``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any, TypeVar

from hfd.client import _calls as calls
from hfd.client._resources import ClientBase, Sync
from hfd.client.transport import Exchange, Transport
from hfd.client.zmq_sync import ZmqTransport

T = TypeVar("T")


class Stream(calls.StreamBase[T]):
    """Chunks of a streamed completion. Closing it early (or dropping it) cancels the request.

    ``usage`` holds the token counts once the stream has ended.
    """

    _exchange: Exchange

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while not self._done:
            item = self._take(self._exchange.receive(self._timeout))
            if item is not None:
                return item
        raise StopIteration

    def close(self) -> None:
        self._finish()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(ClientBase[Sync, Transport]):
    """A blocking client for the daemon's IPC socket.

    ``path``: the socket path or an ``ipc://`` endpoint (default: where the daemon binds by
    default, see ``hfd.client.paths``), or the ``tcp://host:port`` of a daemon's ``ipc_tcp``.
    ``timeout``: seconds a request (or, for a stream, each chunk; for a pull, each progress
    event) may take before ``Timeout``; the request is then cancelled on the daemon.

    ``curve_server_key``, ``curve_public_key``, ``curve_secret_key``: CURVE keys for a
    ``tcp://`` endpoint, each a Z85 string or a key file (see ``hfd.client.curve``); the public
    key may be left out. A refused key raises ``Unauthorized`` on the first request.

    ``transport``: carry requests another way than the ZeroMQ socket (``path`` and the keys
    are then unused), e.g. ``hfd.client.transport.MemoryTransport`` in tests.
    """

    _default_transport = ZmqTransport

    def _call(self, call: calls.Call[T]) -> Any:
        """Perform ``call``: its value, or a ``Stream`` of its chunks."""
        request, timeout = self._request(call)
        exchange = self._transport.open(request, timeout)
        if call.kind == calls.STREAM:
            return Stream(exchange, call, timeout)
        with closing(exchange):  # cancels it on the daemon unless it ended
            while True:
                final, value = calls.outcome(call, exchange.receive(timeout), timeout)
                if final:
                    return value
                if value is not None:
                    call.progress(value)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
