"""The blocking client: ``Client``, shaped like the OpenAI SDK's.

Its methods are defined once for both clients (``hfd.client._resources``); what is here is
how a blocking client waits for replies. The socket code is the transport's
(``hfd.client.zmq_sync`` by default, see ``hfd.client.transport``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from hfd.client import _calls as calls
from hfd.client._common import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, RequestIds
from hfd.client._resources import Admin, Chat, Completions, Embeddings, Models, Sync
from hfd.client.curve import KeySource, curve_keys
from hfd.client.paths import normalize_endpoint
from hfd.client.protocol import Request
from hfd.client.transport import Exchange, Transport
from hfd.client.types import Usage
from hfd.client.zmq_sync import ZmqTransport

T = TypeVar("T")


class Stream(Generic[T]):
    """Chunks of a streamed completion. Closing it early (or dropping it) cancels the request.

    ``usage`` holds the token counts once the stream has ended.
    """

    def __init__(self, exchange: Exchange, call: calls.Call[T], timeout: float | None) -> None:
        self._exchange = exchange  # it keeps the transport (and its sockets) alive
        self._reader = calls.StreamReader(call.parse)
        self._timeout = timeout
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return self._reader.usage

    @property
    def finish_reason(self) -> str | None:
        return self._reader.finish_reason

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while not self._done:
            reply = self._exchange.receive(self._timeout)
            if reply is None:
                self.close()
                raise calls.stream_timed_out(self._timeout)
            if reply.final:
                self._done = True
                self._exchange.close()
            item = self._reader.feed(reply)
            if item is not None:
                return item
        raise StopIteration

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self._exchange.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            try:
                self._exchange.close_from_anywhere()
            except Exception:
                pass  # interpreter shutdown: the daemon cancels streams of gone clients


class Client(Admin[Sync]):
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

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        curve_server_key: KeySource | None = None,
        curve_public_key: KeySource | None = None,
        curve_secret_key: KeySource | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(self._call)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        if transport is None:
            self.endpoint = normalize_endpoint(path)
            curve = curve_keys(curve_server_key, curve_public_key, curve_secret_key)
            transport = ZmqTransport(self.endpoint, connect_timeout=connect_timeout, curve=curve)
        else:
            self.endpoint = str(getattr(transport, "endpoint", "custom"))
        self._transport = transport
        self._ids = RequestIds()
        self.models: Models[Sync] = Models(self._run)
        self.embeddings: Embeddings[Sync] = Embeddings(self._run)
        self.chat: Chat[Sync] = Chat(self._run)
        self.completions: Completions[Sync] = Completions(self._run)

    def _call(self, call: calls.Call[T]) -> Any:
        """Perform ``call``: its value, or a ``Stream`` of its chunks."""
        timeout = self.timeout if call.timeout is None else call.timeout
        request = Request(id=self._ids.next(), op=call.op, body=call.body, frames=call.frames)
        exchange = self._transport.open(request, timeout)
        if call.kind == calls.STREAM:
            return Stream(exchange, call, timeout)
        try:
            while True:
                reply = exchange.receive(timeout)
                if reply is None:
                    raise calls.timed_out(call.op, timeout)
                if reply.final:
                    return calls.result(call, reply)
                event = calls.pull_event(reply)
                if event is not None:
                    call.progress(event)
        finally:
            exchange.close()  # cancels it on the daemon unless it ended

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
