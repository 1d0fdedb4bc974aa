"""The HTTP door's access and accounting middleware (pure ASGI, outside the routes).

Per request, in this order:

1. a request id (the client's ``X-Request-Id`` when it is a sane token, else a new one), bound
   to the context for log lines and echoed in the response's ``X-Request-Id``;
2. who is calling (``Authorization: Bearer``), refused with 401 when keys are required and the
   key is missing, unknown or revoked; open routes (``/health``, ``/ready``) skip this;
3. what they may do: the route's scope and, for a key with a model allow-list, the ``model``
   of the request body (or of ``/v1/models/{id}``), refused with 403;
4. the key's rate limits, refused with 429 and ``Retry-After``;
5. after the reply: metrics and a usage record (tokens come from what the service noted in the
   request context).

To read ``model`` the body is buffered here (within ``http_max_body_bytes``) and replayed to
the route, so it is read from the socket once.
"""

from __future__ import annotations

import json
import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hfd.client.errors import PayloadTooLarge, Unauthorized
from hfd.daemon import reqctx
from hfd.daemon.access.auth import KNOWN_PATHS, OPEN, scope_for_http
from hfd.daemon.access.control import Access
from hfd.daemon.http.errors import error_response
from hfd.daemon.ollama import names as ollama_names
from hfd.daemon.ollama.errors import error_response as ollama_error_response
from hfd.daemon.operations import OPERATIONS

log = logging.getLogger(__name__)

# Routes whose "model" may be an Ollama name: a key's model allow-list is checked against the
# model it stands for (``chat:latest`` is ``chat``; a copy is what it was copied from).
OLLAMA_PATHS = frozenset(
    path for o in OPERATIONS if o.name.startswith("ollama.") or o.op == "models.pull" for _, path in o.http
)
# Routes of Ollama's own API: their errors are Ollama's {"error": "..."}, here as in the routes.
OLLAMA_ONLY = frozenset(path for o in OPERATIONS if o.name.startswith("ollama.") for _, path in o.http)

_OTHER_ROUTE = "other"  # unknown paths share one metrics label


class OpsMiddleware:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.ops = access
        self.max_body = access.settings.http_max_body_bytes
        self.metrics_public = access.settings.metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ops = self.ops
        method: str = scope["method"]
        path: str = scope["path"]
        headers = Headers(scope=scope)
        ctx = ops.begin("http", path, request_id=headers.get("x-request-id"))
        status = 500
        rid_header = (b"x-request-id", ctx.request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), rid_header]}
            await send(message)

        # The protocol's log line for a dropped connection names the request.
        scope["hfd.request_id"] = ctx.request_id
        with reqctx.bind(ctx):
            # Whatever happens below, the request is finished exactly once: the in-flight gauge
            # comes down and the usage row is written.
            try:
                try:
                    needed = scope_for_http(method, path, metrics_public=self.metrics_public)
                    body: bytes | None = None
                    if needed is not OPEN:
                        await ops.fresh_keys()
                        principal = ops.auth.http(headers.get("authorization"), headers.get("x-api-key"))
                        if method in ("POST", "DELETE") and _declared_length(headers) <= self.max_body:
                            body = await _read_body(receive, self.max_body)
                        model = _model_of(path, body)
                        if model and path in OLLAMA_PATHS:  # name:tag and copies: what it names
                            model = ollama_names.resolve(ops.settings, model)
                        ops.authorize(ctx, principal, needed, model)
                    elif method == "POST" and _declared_length(headers) <= self.max_body:
                        body = await _read_body(receive, self.max_body)
                        ctx.model = _model_of(path, body)
                except Exception as err:
                    if isinstance(err, Unauthorized):
                        ops.metrics.auth_failures.labels("http", "unauthorized").inc()
                    respond = ollama_error_response if path in OLLAMA_ONLY else error_response
                    response = respond(err, method=method, path=path)
                    if isinstance(err, Unauthorized):
                        response.headers["WWW-Authenticate"] = 'Bearer realm="hfd"'
                    if isinstance(err, PayloadTooLarge):
                        response.headers["Connection"] = "close"
                    await response(scope, receive, send_with_id)
                    return
                await self.app(scope, _replay(body, receive) if body is not None else receive, send_with_id)
            finally:
                ops.finish(ctx, status, route=_route_label(scope, path))


def _declared_length(headers: Headers) -> int:
    """The declared body size (0 when none; an oversized or bad one is left to BodyLimit)."""
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 1 << 62


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: disconnect notices

    return replay


def _model_of(path: str, body: bytes | None) -> str | None:
    if path.startswith("/v1/models/"):
        return path[len("/v1/models/") :] or None
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # the route answers bad (or too deeply nested) JSON with its own 400
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _route_label(scope: Scope, path: str) -> str:
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    if path in KNOWN_PATHS:  # refused before routing
        return path
    return _OTHER_ROUTE
