"""An HTTP request as plain data, carried from the ingress to a replica and run there through
hfd's own ASGI app (``hfd.daemon.http.app.create_app``), so routes, error bodies and streaming
are the single-box daemon's by construction.

The replica side (:func:`run_asgi`) yields the response head (``{"status", "headers"}``) first,
then the body chunks as the app sends them: an SSE stream reaches the ingress chunk by chunk.
Closing the iterator (the ingress's client went away) tells the app the client disconnected,
which cancels the work the way a dropped connection does on one box.

:func:`model_of` finds the model a request is for, to route it to that model's replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass(frozen=True)
class Forwarded:
    """One HTTP request, as the ingress received it (the body already read)."""

    method: str
    path: str
    query: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    client: tuple[str, int] | None = None

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode("utf-8"),
            "root_path": "",
            "query_string": self.query,
            "headers": [(k.lower(), v) for k, v in self.headers],
            "server": ("hfd-replica", 0),
            "client": self.client or ("127.0.0.1", 0),
        }


async def run_asgi(app: ASGIApp, request: Forwarded) -> AsyncIterator[dict[str, Any] | bytes]:
    """Run ``request`` through ``app``: the head, then each non-empty body chunk."""
    messages: asyncio.Queue[Message | None] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await messages.put(message)

    async def call() -> None:
        try:
            await app(request.scope(), receive, send)
        finally:
            await messages.put(None)

    task = asyncio.ensure_future(call())
    try:
        while True:
            message = await messages.get()
            if message is None:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
                return
            if message["type"] == "http.response.start":
                yield {"status": int(message["status"]), "headers": list(message.get("headers", []))}
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    yield bytes(chunk)
                if not message.get("more_body", False):
                    return
    finally:
        disconnected.set()  # the app sees the client go away: its work is cancelled
        if not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        if not task.done():
            task.cancel()


def model_of(request: Forwarded, content_type: str = "") -> str | None:
    """The model a request names: ``/v1/models/{id}``, a JSON body's ``model``, or a form's."""
    if request.path.startswith("/v1/models/"):
        return request.path[len("/v1/models/") :] or None
    if not request.body:
        return None
    if content_type.startswith("multipart/form-data"):
        return _form_model(request.body, content_type)
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _form_model(body: bytes, content_type: str) -> str | None:
    """The ``model`` field of a multipart body (uploads name their model in the form)."""
    marker = b'name="model"'
    at = body.find(marker)
    if at < 0:
        return None
    start = body.find(b"\r\n\r\n", at)
    if start < 0:
        return None
    end = body.find(b"\r\n--", start + 4)
    value = body[start + 4 : end if end >= 0 else None]
    try:
        return value.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        return None


def served_name(model: str, names: set[str]) -> str | None:
    """The deployment a requested name stands for: the name itself, or an Ollama
    ``name:latest`` of it."""
    if model in names:
        return model
    base, _, tag = model.rpartition(":")
    if base and tag == "latest" and base in names:
        return base
    return None
