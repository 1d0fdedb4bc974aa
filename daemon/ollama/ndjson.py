"""A stream of JSON lines (``application/x-ndjson``), as Ollama streams chat, generate and
pull: one object per line. An error after the stream started is the last line,
``{"error": "..."}``, which Ollama's clients raise.

The connection is watched while the stream runs: when the client goes away the stream is
cancelled at once and ``close`` runs (a generation leaves the batch at its next step).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hfd.daemon.http.sse import EventStream
from hfd.daemon.ollama.errors import error_line

MEDIA_TYPE = "application/x-ndjson"


def encode_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def ndjson_stream(lines: AsyncIterator[dict[str, Any]], close: Callable[[], Awaitable[None]]) -> EventStream:
    """The HTTP door's one streaming response, writing JSON lines; an error after the start is
    the last line."""
    return EventStream(
        lines,
        close,
        encode=encode_line,
        done=b"",
        error=lambda exc: encode_line(error_line(exc)),
        media_type=MEDIA_TYPE,
    )
