"""Server-sent events for streamed completions, with disconnect detection.

The response watches the connection while it streams: when the client goes away, the stream
is cancelled at once and its generation closed, so the sequence leaves the batch at the next
step instead of decoding to the end for nobody. This does not rely on a failed ``send`` (which
only happens at the next token) or on garbage collection of the generator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from hfd.daemon.http.disconnect import until_disconnect
from hfd.daemon.http.errors import sse_error_event

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def encode_event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def named_event(event: dict[str, Any]) -> bytes:
    """An SSE event with its ``event:`` line (its ``type``), as the Responses and Messages APIs
    send them."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def named_events(
    events: AsyncIterator[dict[str, Any]],
    close: Callable[[], Awaitable[None]],
    error: Callable[[BaseException], bytes],
) -> EventStream:
    """A stream of named events with no end marker (the Responses and Messages APIs'); ``error``
    makes the event a failure mid-stream ends with."""
    return EventStream(events, close, encode=named_event, done=b"", error=error)


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[dict[str, Any]],
        close: Callable[[], Awaitable[None]],
        *,
        encode: Callable[[dict[str, Any]], bytes] = encode_event,
        done: bytes = DONE,
        error: Callable[[BaseException], bytes] = sse_error_event,
        media_type: str | None = None,
    ) -> None:
        # encode, done, error: how events, the end and an error after the start are written
        # (the Responses and Anthropic APIs name their events and send no [DONE]; Ollama's
        # NDJSON streams write one JSON line per event, under their own media type).
        self._encode, self._done, self._error = encode, done, error
        if media_type is not None:
            self.media_type = media_type
        # As Starlette's StreamingResponse: no body, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._close = close
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            finished, _ = await until_disconnect(lambda: self._pump(send), receive)
            if not finished:
                self.client_gone = True
                log.info("client disconnected; stream cancelled", extra={"path": scope.get("path")})
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._events, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._close()

    async def _pump(self, send: Send) -> None:
        async def emit(message: Message) -> None:
            try:
                await send(message)
            except Exception as exc:
                raise _SendFailed(exc) from exc

        try:
            await emit(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            try:
                async for event in self._events:
                    await emit({"type": "http.response.body", "body": self._encode(event), "more_body": True})
                tail = self._done
            except _SendFailed:
                raise
            except Exception as exc:  # the stream already started: say so in-band
                tail = self._error(exc)
            await emit({"type": "http.response.body", "body": tail, "more_body": True})
            await emit({"type": "http.response.body", "body": b"", "more_body": False})
        except _SendFailed as failed:
            # ASGI servers raise OSError from send() once the client is gone.
            self.client_gone = True
            if not isinstance(failed.__cause__, OSError):
                log.warning(
                    "stream aborted: the server refused a write", extra={"error": repr(failed.__cause__)}
                )


class _SendFailed(Exception):
    """Writing to the client failed: it is gone, or the connection is unusable."""
