"""A stream of JSON lines (``application/x-ndjson``), as Ollama streams chat, generate and
pull: one object per line. An error after the stream started is the last line,
``{"error": "..."}``, which Ollama's clients raise.

The connection is watched while the stream runs: when the client goes away the stream is
cancelled at once and ``close`` runs (a generation leaves the batch at its next step).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hfd.daemon.http.disconnect import until_disconnect
from hfd.daemon.ollama.errors import error_line

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/x-ndjson"


def encode_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _ClientGone(Exception):
    pass


class NdjsonStream(Response):
    media_type = MEDIA_TYPE

    def __init__(self, lines: AsyncIterator[dict[str, Any]], close: Callable[[], Awaitable[None]]) -> None:
        # As Starlette's StreamingResponse: no body, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._lines = lines
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
                aclose = getattr(self._lines, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._close()

    async def _pump(self, send: Send) -> None:
        async def write(body: bytes, more: bool = True) -> None:
            try:
                await send({"type": "http.response.body", "body": body, "more_body": more})
            except Exception as exc:  # servers raise OSError (or their own) once the client is gone
                raise _ClientGone(str(exc)) from exc

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                async for line in self._lines:
                    await write(encode_line(line))
            except _ClientGone:
                raise
            except Exception as exc:  # the stream already started: say so in-band
                await write(encode_line(error_line(exc)))
            await write(b"", more=False)
        except _ClientGone:
            self.client_gone = True
