"""Multipart form bodies (file uploads: ``/v1/audio/transcriptions`` and ``/translations``),
read into the same field mapping a JSON or msgpack body gives, so the row's request type
validates them as usual. Parsing is Starlette's (python-multipart); see
``hfd.daemon.transcribe.read_form`` for where the bytes live meanwhile."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from hfd.daemon.settings import Settings


async def multipart_body(request: Request, settings: Settings) -> dict[str, Any]:
    from hfd.daemon.transcribe import read_form

    return await read_form(request, settings.audio_max_bytes)
