"""The asyncio ZeroMQ transport: the default of ``AsyncClient``.

One DEALER socket per client and one receiver task that hands each reply to the queue of its
request id, so any number of tasks can have requests in flight at once. A request given up
(its task cancelled, a timeout, a stream closed early) sends ``cancel`` to the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import weakref
from collections.abc import Callable
from typing import Any, cast

import zmq
import zmq.asyncio

from hfd.client import _common as common
from hfd.client.curve import CurveKeys, HandshakeWatch
from hfd.client.errors import DaemonUnavailable, HfdError
from hfd.client.protocol import Reply, Request, decode_reply, encode_request

log = logging.getLogger(__name__)


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


async def _get_within(queue: asyncio.Queue[Reply], seconds: float) -> Reply:
    """``queue.get()`` or ``asyncio.TimeoutError`` after ``seconds``. Once per streamed chunk:
    ``asyncio.timeout`` (Python 3.11.3 on) only sets a timer, where ``wait_for`` runs the get in a
    task of its own."""
    if sys.version_info < (3, 11, 3):  # no asyncio.timeout, or one raising CancelledError (gh-102780)
        return await asyncio.wait_for(queue.get(), seconds)
    async with asyncio.timeout(seconds):
        return await queue.get()


class _AsyncSockets:
    """What an ``AsyncZmqTransport`` must close: its context, its socket, the receiver task and
    the handshake watch. No reference to the transport or client, so the finalizer that closes
    them outlives both (see ``hfd.client.zmq_sync._Sockets`` for why a dropped client must close
    them itself)."""

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


class AsyncZmqTransport(common.TransportBase):
    """Requests over one DEALER socket per event loop to ``endpoint``; ``connect_timeout`` as
    for ``hfd.client.zmq_sync.ZmqTransport``."""

    def __init__(self, endpoint: str, *, connect_timeout: float, curve: CurveKeys | None = None) -> None:
        super().__init__(endpoint, connect_timeout=connect_timeout, curve=curve)
        self._res = _AsyncSockets()
        # A transport dropped without close() closes its socket and context when collected.
        self._finalizer = weakref.finalize(self, self._res.close_all)
        self._queues: dict[str, asyncio.Queue[Reply]] = {}
        self._check_lock: asyncio.Lock | None = None

    async def open(self, request: Request, timeout: float | None) -> _AsyncZmqExchange:
        return await self._open_on(await self._ready(), request, timeout)

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
                    await self._check(sock)
        return sock

    async def _check(self, sock: zmq.asyncio.Socket) -> None:
        """The first request makes sure a daemon answers, so a missing one fails fast."""
        common.probe_socket(self.endpoint)
        try:
            health = common.health_request(self._ids)
            exchange = await self._open_on(sock, health, self.connect_timeout)
            try:
                reply = await exchange.receive(self.connect_timeout)
                while reply is not None and not reply.final:
                    reply = await exchange.receive(self.connect_timeout)
            finally:
                exchange.close()
            common.check_health(reply, self.endpoint, self.connect_timeout)
        except DaemonUnavailable as exc:
            if self._res.watch is not None:
                raise self._res.watch.explain(self.endpoint, exc) from None
            raise
        self._stop_watching()
        self._checked = True

    async def _open_on(
        self, sock: zmq.asyncio.Socket, request: Request, timeout: float | None
    ) -> _AsyncZmqExchange:
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._queues[request.id] = queue
        try:
            wait = self._send_wait(timeout)
            # The stubs miss poll's flags argument, which zmq.asyncio has.
            if not await sock.poll(int(wait * 1000), zmq.POLLOUT):  # type: ignore[call-arg]
                raise common.not_answering(self.endpoint, wait)
            await sock.send_multipart(encode_request(request))
        except BaseException:
            self._forget(request.id)
            raise
        return _AsyncZmqExchange(self, request.id, queue)

    def _forget(self, rid: str) -> None:
        self._queues.pop(rid, None)

    def _cancel(self, rid: str) -> None:
        """Tell the daemon to stop ``rid``; fire and forget (called from the client's loop)."""
        self._forget(rid)
        sock = self._res.sock
        if sock is None or sock.closed:
            return
        frames = encode_request(common.cancel_request(rid))
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

    def close(self) -> None:
        if self._closed:
            return
        self._queues.clear()
        self._closed = True
        self._finalizer()


class _AsyncZmqExchange:
    """One request's queue. It keeps its transport alive: a stream outlives no socket."""

    def __init__(self, transport: AsyncZmqTransport, rid: str, queue: asyncio.Queue[Reply]) -> None:
        self._transport = transport
        self._rid = rid
        self._queue = queue
        self._ended = False
        self._closed = False

    async def receive(self, timeout: float | None) -> Reply | None:
        queue = self._queue
        try:
            if not queue.empty():
                reply = queue.get_nowait()
            elif timeout is None:
                reply = await queue.get()
            else:
                reply = await _get_within(queue, timeout)
        except asyncio.TimeoutError:
            return None
        if reply.final:
            self._ended = True
        return reply

    def close(self) -> None:
        self._end(self._transport._cancel)

    def close_from_anywhere(self) -> None:
        self._end(self._transport._cancel_threadsafe)

    def _end(self, cancel: Callable[[str], None]) -> None:
        if not self._closed:
            self._closed = True
            (self._transport._forget if self._ended else cancel)(self._rid)
