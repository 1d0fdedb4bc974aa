"""``POST /api/pull`` answered as a stream of JSON lines (``application/x-ndjson``), as
Ollama's pull API does: one progress object per line, then ``{"status": "success", ...}``, or
``{"status": "error", "error": {...}}`` when the pull fails after the stream started.

The connection is watched while the pull runs: when the client goes away the pull is cancelled
(``hfd.daemon.pulls``), so a download nobody waits for stops at its next chunk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hfd.daemon.http.disconnect import until_disconnect
from hfd.daemon.http.errors import as_hfd_error, error_body

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/x-ndjson"

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Run = Callable[[Emit], Awaitable[dict[str, Any]]]


def encode_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


class NdjsonPull(Response):
    media_type = MEDIA_TYPE

    def __init__(self, run: Run) -> None:
        # As Starlette's StreamingResponse: no body, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._run = run
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def write(data: dict[str, Any]) -> None:
            try:
                await send({"type": "http.response.body", "body": encode_line(data), "more_body": True})
            except Exception as exc:  # servers raise OSError (or their own) once the client is gone
                raise _ClientGone(str(exc)) from exc

        async def respond() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                tail = await self._run(write)
            except _ClientGone:
                self.client_gone = True
                return
            except Exception as exc:  # the stream already started: say so in-band
                tail = {"status": "error", **error_body(as_hfd_error(exc))}
            try:
                await write(tail)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except _ClientGone:
                self.client_gone = True

        finished, _ = await until_disconnect(respond, receive)
        if not finished:
            self.client_gone = True
            log.info("client disconnected; pull cancelled", extra={"path": scope.get("path")})
