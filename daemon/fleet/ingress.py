"""The cluster's HTTP door: hfd's own middleware (request ids, API keys, scopes, rate limits,
body bounds, metrics, the usage log) around a router that sends each request to a replica of
the model it names, and streams the replica's answer back as it comes.

- A request naming a model goes to that model's deployment (``served_name``: the name, or an
  Ollama ``name:latest`` of it); an unknown model is hfd's 404 ``model_not_found``.
- ``GET /v1/models``, ``/api/tags`` and ``/api/ps`` ask every deployment and merge the lists;
  ``/health`` and ``/metrics`` are answered here (``/metrics``: every replica's, merged by the
  metrics hub); other requests without a model go to the first model's replicas.
- A replica that dies before its answer starts (its node went away) is retried on another
  replica, up to ``RETRIES`` times; then, or when it dies mid-stream, the client gets hfd's
  503 ``model_unavailable`` (or the stream ends). A request does not wait on a dead node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from hfd import __version__
from hfd.client.errors import ModelNotFound, ModelUnavailable
from hfd.daemon.fleet.bridge import Forwarded, model_of, served_name
from hfd.daemon.http.errors import error_response
from hfd.daemon.settings import Settings

log = logging.getLogger(__name__)

RETRIES = 3
MERGED_LISTS = {"/v1/models": "data", "/api/tags": "models", "/api/ps": "models"}


class Router:
    """The ASGI app behind the middleware; ``handles``: model name -> its deployment handle."""

    def __init__(self, handles: dict[str, Any], hub: Any = None) -> None:
        self.handles = handles
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Forwarded(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=list(scope.get("headers", [])),
            body=await _body(receive),
            client=tuple(scope["client"]) if scope.get("client") else None,  # type: ignore[arg-type]
        )
        try:
            await self._answer(request, scope, receive, send)
        except Exception as exc:
            await error_response(exc, method=request.method, path=request.path)(scope, receive, send)

    async def _answer(self, request: Forwarded, scope: Scope, receive: Receive, send: Send) -> None:
        if request.method == "GET" and request.path == "/health":
            await _json(send, 200, {"status": "ok", "version": __version__, "mode": "ray"})
            return
        if request.method == "GET" and request.path == "/metrics" and self.hub is not None:
            text = await self.hub.exposition.remote()
            await _send(
                send, 200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")], text.encode()
            )
            return
        if request.method == "GET" and request.path in MERGED_LISTS:
            await self._merged(request, send, MERGED_LISTS[request.path])
            return
        content_type = dict(request.headers).get(b"content-type", b"").decode("latin-1")
        model = model_of(request, content_type)
        if model is None:
            name = next(iter(self.handles))
        else:
            found = served_name(model, set(self.handles))
            if found is None:
                raise ModelNotFound(f"model {model!r} is not served; GET /v1/models lists the models")
            name = found
        await self._forward(name, request, send)

    async def _forward(self, name: str, request: Forwarded, send: Send) -> None:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

        lost = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
        for attempt in range(RETRIES + 1):
            stream = self.handles[name].options(stream=True).forward.remote(request)
            try:
                head = await stream.__anext__()
            except lost as exc:
                log.warning(
                    "replica lost before answering",
                    extra={"model": name, "attempt": attempt, "error": str(exc)},
                )
                stream.cancel()
                if attempt == RETRIES:
                    raise ModelUnavailable(f"no replica of {name!r} could answer; try again") from None
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            except StopAsyncIteration:
                raise ModelUnavailable(f"the replica of {name!r} sent no answer") from None
            await send({"type": "http.response.start", "status": head["status"], "headers": head["headers"]})
            try:
                async for chunk in stream:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except lost as exc:  # the head went out: all that is left is to end the body
                log.warning("replica lost mid-answer", extra={"model": name, "error": str(exc)})
            finally:
                stream.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return

    async def _merged(self, request: Forwarded, send: Send, key: str) -> None:
        """One list from every deployment's answer (the first error answers for all)."""

        async def one(name: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            head: dict[str, Any] = {}
            body = b""
            async for part in self.handles[name].options(stream=True).forward.remote(request):
                if isinstance(part, dict):
                    head = part
                else:
                    body += part
            return int(head.get("status", 502)), head.get("headers", []), body

        answers = await asyncio.gather(*(one(n) for n in self.handles))
        merged: list[Any] = []
        first: dict[str, Any] = {}
        for status, headers, body in answers:
            if status != 200:
                await _send(send, status, headers, body)
                return
            data = json.loads(body)
            first = first or data
            merged.extend(data.get(key, []))
        await _json(send, 200, {**first, key: merged})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    keep = [(k, v) for k, v in headers if k.lower() not in (b"content-length",)]
    keep.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": keep})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, data: Any) -> None:
    await _send(send, status, [(b"content-type", b"application/json")], json.dumps(data).encode())


def ingress_app(settings: Settings, handles: dict[str, Any], hub: Any = None) -> Any:
    """The ASGI app of the ingress: the HTTP door's own middleware stack around the router."""
    from hfd.daemon.access.control import Access
    from hfd.daemon.http.limits import BodyLimit, BodyTimeout
    from hfd.daemon.http.middleware import OpsMiddleware
    from hfd.daemon.metrics import Metrics

    access = Access(settings, Metrics())
    access.check_startup()
    app: Any = Router(handles, hub)
    app = BodyLimit(app, max_bytes=settings.http_max_body_bytes)
    app = OpsMiddleware(app, access=access)
    app = BodyTimeout(app, timeout=settings.http_body_timeout)
    return app, access
