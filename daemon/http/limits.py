"""The request body's limits, as ASGI middleware: its size and how slowly it may arrive.

A declared ``Content-Length`` over the limit is refused without buffering the body; a body
without one (chunked) is counted as it arrives and refused as soon as it passes the limit, so a
client cannot make the daemon hold more than ``max_bytes`` either way.

Before answering 413, the rest of the body is read and thrown away (up to ``DRAIN_FACTOR``
times the limit): a server that closes a connection with unread data makes the kernel reset
it, and the client then loses the 413 it was about to read. Beyond that bound the connection
is closed regardless, so a client cannot keep the daemon reading for ever.

``BodyTimeout`` bounds the pause between two reads of a body (a body shorter than its
``Content-Length`` is otherwise waited for until the client gives up): beyond it, whoever is
reading the body (the access middleware or a route) gets ``RequestTimeout``, answered 408 with
``Connection: close``. After its first ``timeout`` seconds a body must also keep an average
of ``MIN_BODY_RATE``, so a byte dripped just within every timeout does not hold a connection
for ever. Reads after the body (disconnect watches) are not bounded.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hfd.client.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from hfd.daemon.http.errors import error_response

DRAIN_FACTOR = 4


async def drain(receive: Receive, budget: int) -> bool:
    """Read and discard the rest of a request body; False when it is longer than ``budget``."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client went away
        budget -= len(message.get("body", b""))
        if budget < 0:
            return False
        if not message.get("more_body", False):
            return True


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | None) -> PayloadTooLarge:
        got = f" ({size} bytes)" if size is not None else ""
        return PayloadTooLarge(f"request body{got} exceeds the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                break
        if declared is not None and (declared < 0 or declared > self.max_bytes):
            exc = (
                InvalidRequest("invalid Content-Length header") if declared < 0 else self._too_large(declared)
            )
            response = error_response(exc)
            # The unread body makes the connection unusable for another request.
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await drain(receive, self.max_bytes * DRAIN_FACTOR - received)
                    # Raised inside the endpoint's body read, where the error mapping answers it.
                    raise self._too_large(None)
            return message

        await self.app(scope, counting_receive, send)


# The slowest a body may arrive on average once its first ``timeout`` seconds are spent (as
# Apache's mod_reqtimeout MinRate): a client dripping a byte just within every timeout would
# otherwise hold a connection, busy and never reclaimed, for days.
MIN_BODY_RATE = 16 * 1024  # bytes per second


class BodyTimeout:
    def __init__(self, app: ASGIApp, timeout: float, min_rate: float = MIN_BODY_RATE) -> None:
        self.app = app
        self.timeout = timeout
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False
        started = anyio.current_time()
        received = 0

        async def timed_receive() -> Message:
            nonlocal complete, received
            if complete:
                return await receive()
            # Every byte received buys 1/min_rate seconds more for the whole body.
            left = started + self.timeout + received / self.min_rate - anyio.current_time()
            wait = min(self.timeout, left)
            message: Message | None = None
            if wait > 0:
                with anyio.move_on_after(wait):
                    message = await receive()
            if message is None:
                if wait < self.timeout:
                    raise RequestTimeout(
                        f"the request body arrives too slowly (under {self.min_rate / 1024:g} KiB/s "
                        f"after its first {self.timeout:g} s)"
                    )
                raise RequestTimeout(
                    f"the request body stopped arriving: nothing for {self.timeout:g} s "
                    "(is it shorter than its Content-Length?)"
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
