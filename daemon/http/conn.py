"""The HTTP door's connections: what a slow or vanished client may cost, bounded.

uvicorn's h11 protocol waits for a request's headers for ever, so clients that open
connections and never finish their headers hold file descriptors until the process runs out
and the door is dead. uvicorn's ``limit_concurrency`` does not help: it is checked only once a
request's headers are in, so it never answers (or closes) those connections, and while they
fill its count every real request gets 503. ``GuardedProtocol`` adds, per connection:

- a header timeout: a request's headers (from its first byte, or from the connection's
  start) must arrive within ``http_header_timeout``; beyond, 408 and close;
- a cap on open connections (``http_max_connections``). A new connection at the cap first
  reclaims one: an idle keep-alive connection, else the one that has waited longest for its
  headers (it gets 408). Only when every connection is busy with a request does the new one
  get 503 with ``Retry-After``, so ``/health`` answers even while the cap is full of slow
  clients;
- a log line, with structured fields, for every request the door drops: a connection lost
  before its response was complete (one line each), a malformed request, a header timeout, a
  refusal at the cap (these come at the attacker's pace: one line per few seconds, with a
  count).

Body timeouts are ASGI middleware (``hfd.daemon.http.limits.BodyTimeout``), so the 408 is the
error envelope every other error uses. ``AcceptErrors`` rate-limits the event loop's
"socket.accept() out of system resource" reports, which otherwise come as a traceback per
failed accept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from hfd.client.errors import HfdError, Overloaded, RequestTimeout

log = logging.getLogger(__name__)

_ACCEPT_MESSAGE = "socket.accept() out of system resource"


class Throttled:
    """Log lines about connections that never made a request (timeouts, refusals, malformed
    requests) are attacker-paced: at most one line per ``interval`` seconds per message, each
    with the count it stands for."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warning(self, message: str, **fields: Any) -> None:
        now = time.monotonic()
        self._count[message] = self._count.get(message, 0) + 1
        last = self._last.get(message)
        if last is not None and now - last < self.interval:
            return
        self._last[message] = now
        count = self._count.pop(message)
        log.warning(message, extra={**fields, "count": count, "report_interval_s": self.interval})


THROTTLED = Throttled()


def raw_error(status: int, reason: str, err: HfdError, *, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 error response in the OpenAI envelope, written before (or instead of)
    h11 parsing a request."""
    body = json.dumps({"error": err.to_dict()}, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class _NotInvalidRequest(logging.Filter):
    # uvicorn logs each malformed request with this bare sentence; ours is throttled.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


# uvicorn's per-connection messages (tracebacks of the ASGI app among them) still reach the
# daemon's log through this child of uvicorn.error.
_UVICORN_LOG = logging.getLogger("uvicorn.error.connections")
_UVICORN_LOG.addFilter(_NotInvalidRequest())


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a connection cap and drop logging.

    The settings arrive as class attributes (``configure`` makes a subclass per server).
    """

    header_timeout: float = 10.0
    max_connections: int = 1024

    @classmethod
    def configure(cls, *, header_timeout: float, max_connections: int) -> type[GuardedProtocol]:
        return type(
            "GuardedProtocol",
            (cls,),
            {"header_timeout": header_timeout, "max_connections": max_connections},
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A level of its own, at least DEBUG: uvicorn formats trace lines for a logger whose
        # own level is NOTSET.
        _UVICORN_LOG.setLevel(max(logging.DEBUG, logging.getLogger("uvicorn.error").getEffectiveLevel()))
        self.logger = _UVICORN_LOG
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_since = time.monotonic()
        self._closing_reason: str | None = None

    # ----------------------------------------------------------------- connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._reclaim_one():
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        err = Overloaded(
            f"the HTTP door has its maximum of {self.max_connections} connections open, all busy; retry shortly",
            retry_after=1,
        )
        THROTTLED.warning(
            "http connection refused: connection cap reached, every connection busy",
            client=_peer(transport),
            max_connections=self.max_connections,
            status=503,
        )
        transport.write(raw_error(503, "Service Unavailable", err, retry_after=1))
        # Half-close, then close once the client has had a moment to read the answer: closing
        # with its request unread would reset the connection and lose the 503.
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(1.0, transport.close)
        self._refused = True

    _refused = False

    def _reclaim_one(self) -> bool:
        """Close one connection that does no work for anybody (idle, else slowest to send its
        headers) to make room; False when every connection is busy with a request."""
        idle: GuardedProtocol | None = None
        slow: GuardedProtocol | None = None
        for conn in self.connections:
            if not isinstance(conn, GuardedProtocol) or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.conn.their_state is not h11.IDLE:
                continue  # a request is being read or answered
            if conn.cycle is not None and not conn.cycle.response_complete:
                continue
            if conn.timeout_keep_alive_task is not None:
                idle = conn
                break
            if slow is None or conn._waiting_since < slow._waiting_since:
                slow = conn
        if idle is not None:
            idle._close("reclaimed at the connection cap (idle keep-alive)")
            return True
        if slow is not None:
            slow._timeout_headers(reason="reclaimed at the connection cap (headers incomplete)")
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_header_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            scope = cycle.scope
            log.warning(
                "http request dropped: connection closed before the response was complete",
                extra={
                    "reason": self._closing_reason or _lost_reason(exc),
                    "client": _peer(self.transport),
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "request_id": scope.get("hfd.request_id"),
                    "response_started": cycle.response_started,
                },
            )
        super().connection_lost(exc)

    def _close(self, reason: str) -> None:
        self._closing_reason = reason
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        self.transport.close()

    # ----------------------------------------------------------------- header timeout

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the refused connection closes
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            # The first bytes of a request on a kept-alive connection: its headers get the
            # same bound as a new connection's.
            self._waiting_since = time.monotonic()
            self._arm_header_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # the headers are in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle now: the keep-alive timer bounds the wait for the next request's first byte.
        self._waiting_since = time.monotonic()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._timeout_headers)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timeout_headers(self, reason: str | None = None) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        reason = reason or f"headers not complete within {self.header_timeout:g} s"
        THROTTLED.warning("http request dropped: " + reason, client=_peer(self.transport), status=408)
        err = RequestTimeout(f"request {reason}")
        self.transport.write(raw_error(408, "Request Timeout", err))
        self._close(reason)

    # ----------------------------------------------------------------- malformed requests

    def send_400_response(self, msg: str) -> None:
        # Only h11's parse errors come here; uvicorn logs a bare sentence.
        THROTTLED.warning(
            "http request dropped: malformed HTTP request",
            client=_peer(self.transport),
            status=400,
            reason=msg,
        )
        self._cancel_header_timer()
        super().send_400_response(msg)


def _peer(transport: asyncio.BaseTransport | None) -> str | None:
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else None


def _lost_reason(exc: Exception | None) -> str:
    if exc is None:
        return "the client closed the connection"
    return f"connection error: {type(exc).__name__}"


class AcceptErrors:
    """An event-loop exception handler that turns the loop's accept-failure reports (EMFILE,
    ENFILE, ENOBUFS, ENOMEM) into at most one log line per ``interval`` seconds, with a count;
    everything else goes to the handler that was there before."""

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self.total = 0
        self._last: float | None = None
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)
        self._loop = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.total += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.error(
            "http door cannot accept connections: out of system resources",
            extra={
                "error": f"{type(exc).__name__}: {exc}" if exc else None,
                "failures_since_last_report": self.suppressed + 1,
                "failures_total": self.total,
                "report_interval_s": self.interval,
            },
        )
        self._last = now
        self.suppressed = 0
