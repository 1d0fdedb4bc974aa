"""The blocking ZeroMQ transport: the default of ``Client``.

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

import zmq

from hfd.client._common import (
    TransportBase,
    cancel_request,
    check_health,
    health_request,
    not_answering,
    probe_socket,
)
from hfd.client.curve import CurveKeys, HandshakeWatch
from hfd.client.errors import DaemonUnavailable
from hfd.client.protocol import Reply, Request, decode_reply, encode_request


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(0, int(seconds * 1000))


class _Sockets:
    """What a ``ZmqTransport`` must close: its context and its channels' sockets.

    It holds no reference to the transport or its client, so the finalizer that closes them outlives it. A
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
        frames = encode_request(cancel_request(rid))
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


class ZmqTransport(TransportBase):
    """Requests over DEALER sockets, one per thread, to ``endpoint``.

    ``connect_timeout`` bounds the first request's ``health`` check (a missing daemon fails
    fast) and every send. Its sockets and context are closed by ``close()`` or, when it is
    dropped, by a finalizer that holds no reference to it (see ``_Sockets``).
    """

    def __init__(self, endpoint: str, *, connect_timeout: float, curve: CurveKeys | None = None) -> None:
        super().__init__(endpoint, connect_timeout=connect_timeout, curve=curve)
        self._sockets = _Sockets()
        self._finalizer = weakref.finalize(self, self._sockets.close_all)
        self._local = threading.local()
        self._channels: weakref.WeakSet[_Channel] = weakref.WeakSet()
        self._channels_lock = threading.Lock()

    def open(self, request: Request, timeout: float | None) -> _ZmqExchange:
        return self._open_on(self._channel(), request, timeout)

    def _open_on(self, channel: _Channel, request: Request, timeout: float | None) -> _ZmqExchange:
        wait = self._send_wait(timeout)
        with channel.lock:
            channel.parked[request.id] = deque()
            if not channel.send(encode_request(request), wait):
                channel.parked.pop(request.id, None)
                raise not_answering(self.endpoint, wait)
        return _ZmqExchange(self, channel, request.id)

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
            exchange = self._open_on(channel, health_request(self._ids), self.connect_timeout)
            try:
                reply = exchange.receive(self.connect_timeout)
                while reply is not None and not reply.final:
                    reply = exchange.receive(self.connect_timeout)
            finally:
                exchange.close()
            check_health(reply, self.endpoint, self.connect_timeout)
        except DaemonUnavailable as exc:
            if channel.watch is not None:
                raise channel.watch.explain(self.endpoint, exc) from None
            raise
        channel.stop_watching()
        self._checked = True

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


class _ZmqExchange:
    """One request on one channel. It keeps its transport alive: a stream outlives no socket."""

    def __init__(self, transport: ZmqTransport, channel: _Channel, rid: str) -> None:
        self._transport = transport
        self._channel = channel
        self._rid = rid
        self._ended = False
        self._closed = False

    def receive(self, timeout: float | None) -> Reply | None:
        # The lock is held only to read, so a pull's ``progress`` may use the client too.
        with self._channel.lock:
            reply = self._channel.receive(self._rid, timeout)
            if reply is not None and reply.final:
                self._ended = True
                self._channel.parked.pop(self._rid, None)
        return reply

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._channel.lock:
            self._channel.parked.pop(self._rid, None)
            if not self._ended:
                self._channel.cancel(self._rid)

    def close_from_anywhere(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._ended:
            self._channel.cancel_from_anywhere(self._rid)
