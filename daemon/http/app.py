"""The HTTP door: an ASGI app with the OpenAI-compatible routes and a few admin routes.

The routes are read from the one table of operations (``hfd.daemon.operations``): each row's
HTTP method and path, its request type and service call, answered the way its kind says.
Routes translate between JSON and the service; they hold no model logic. Every route runs
inside ``errors.guarded``, which hands any exception to the one error mapping
(``hfd.daemon.http.errors``), so nothing a client sends can take the daemon down.

    GET  /health                  liveness and version
    GET  /v1/models               the models this daemon serves
    GET  /v1/models/{id}
    POST /v1/chat/completions     streaming (SSE) or not
    POST /v1/completions          streaming (SSE) or not
    POST /v1/embeddings           float or base64
    GET  /api/ps                  loaded models, with their schedulers' counters
    POST /api/load, /api/unload   {"model": ..., "keep_alive": ...}
    POST /api/pull                {"model": ..., "stream": bool}: progress as JSON lines
    GET  /api/stats               response cache, model manager, memory pools, breakers
    GET  /api/version, /api/hardware
    POST /api/chat, /api/generate, /api/embed, /api/embeddings, /api/show, /api/copy;
    GET /api/tags; DELETE /api/delete: Ollama's API (hfd.daemon.ollama)
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from hfd.client.errors import InvalidJSON
from hfd.daemon import responses, web
from hfd.daemon.access.control import Access
from hfd.daemon.http import anthropic_routes, ops_routes, responses_routes
from hfd.daemon.http.disconnect import until_disconnect, whole_text
from hfd.daemon.http.errors import error_response, guarded
from hfd.daemon.http.limits import BodyLimit, BodyTimeout
from hfd.daemon.http.middleware import OpsMiddleware
from hfd.daemon.http.multipart import multipart_body
from hfd.daemon.http.pull_stream import NdjsonPull
from hfd.daemon.http.sse import EventStream
from hfd.daemon.metrics import Metrics
from hfd.daemon.ollama import routes as ollama_routes
from hfd.daemon.operations import OPERATIONS, Operation
from hfd.daemon.schema import parse
from hfd.daemon.service import Generation, Service
from hfd.daemon.settings import Settings

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidJSON("the request body is nested too deeply") from None


class Routes:
    """One ASGI endpoint per kind of operation (``hfd.daemon.operations``); the row says which
    service call answers and how its body parses."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def endpoint(self, operation: Operation) -> Endpoint:
        answer = {
            "unary": self._unary,
            "embedding": self._embedding,
            "generation": self._generation,
            "progress": self._progress,
        }[operation.kind]

        async def run(request: Request) -> Response:
            return await answer(request, operation)

        return guarded(run)

    async def _parse(self, request: Request, operation: Operation) -> Any:
        if operation.request is None:
            return dict(request.path_params)
        form = request.headers.get("content-type", "").startswith(_FORMS)
        if form and "file" in operation.request.model_fields:  # uploads (speech recognition)
            return parse(operation.request, await multipart_body(request, self.service.settings))
        return parse(operation.request, await read_json(request))

    async def _unary(self, request: Request, operation: Operation) -> Response:
        call = operation.call
        assert call is not None
        req = await self._parse(request, operation)
        if operation.cancel_on_disconnect:  # model work: a client that hangs up cancels it
            finished, body = await until_disconnect(lambda: call(self.service, req), request.receive)
            if not finished:
                log.info("client disconnected; request cancelled", extra={"route": operation.name})
                return Response(status_code=499)
            return _body_response(body)
        body = call(self.service, req)
        if inspect.isawaitable(body):
            body = await body
        return _body_response(body)

    async def _embedding(self, request: Request, operation: Operation) -> Response:
        call = operation.call
        assert call is not None
        req = await self._parse(request, operation)
        # A client that hangs up cancels its embedding: the encoder scheduler then drops its
        # items not yet computed at the next batch boundary.
        finished, result = await until_disconnect(lambda: call(self.service, req), request.receive)
        if not finished:
            log.info("client disconnected; embeddings cancelled", extra={"model": req.model})
            return Response(status_code=499)
        assert result is not None
        return JSONResponse(responses.embeddings(result, req.encoding_format))

    async def _generation(self, request: Request, operation: Operation) -> Response:
        """A generation as the client asked for it: an SSE stream of chunks, or one whole JSON
        body (499 when the client went away before it was done)."""
        assert operation.call is not None and operation.reply is not None
        req = await self._parse(request, operation)
        gen: Generation = await operation.call(self.service, req)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return EventStream(operation.reply.chunks(gen, include_usage=usage), gen.aclose)
        text = await whole_text(gen, request.receive)
        if text is None:
            log.info("client disconnected; generation cancelled", extra={"id": gen.id, "model": gen.model})
            return Response(status_code=499)
        return JSONResponse(operation.reply.whole(gen, text))

    async def _progress(self, request: Request, operation: Operation) -> Response:
        assert operation.call is not None
        call = operation.call
        req = await self._parse(request, operation)
        # A bad request is an error status, not a stream that fails at once.
        if operation.check is not None:
            operation.check(self.service, req)
        if req.stream:
            return NdjsonPull(lambda emit: call(self.service, req, emit))
        finished, result = await until_disconnect(lambda: call(self.service, req, None), request.receive)
        if not finished:
            log.info("client disconnected; pull cancelled", extra={"model": req.model})
            return Response(status_code=499)
        return JSONResponse(result)


_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # form bodies (uploads)


def _body_response(body: Any) -> Response:
    # Text bodies (transcripts as text, srt, vtt) go out as text, as OpenAI sends them.
    return PlainTextResponse(body) if isinstance(body, str) else JSONResponse(body)


async def _http_exception(request: Request, exc: Exception) -> Response:
    return error_response(exc, method=request.method, path=request.url.path)


def create_app(service: Service, settings: Settings, access: Access | None = None) -> Starlette:
    """The ASGI app. ``access``: the daemon's one (hfd.daemon.app); an app made alone gets its own."""
    if access is None:
        access = Access(settings, Metrics())
    r = Routes(service)
    own = ops_routes.routes(access)  # /ready, /metrics: answered from access control's state
    own.update(ollama_routes.routes(service))  # Ollama's API in its own shapes
    # The Responses and Anthropic Messages APIs: translations over the chat path.
    own.update(responses_routes.routes(service, read_json))
    own.update(anthropic_routes.routes(service, read_json))
    # /openapi.json, the web page, /api/usage/recent; the document lists the routes served.
    own.update(web.routes(settings, access, lambda o: o.call is not None or o.name in own))
    routes: list[Route] = []
    for operation in OPERATIONS:
        for method, path in operation.http:
            if operation.name in own:  # a row's own route first: the Responses API's SSE
                routes.append(own[operation.name])
            elif operation.call is not None:
                routes.append(Route(path, r.endpoint(operation), methods=[method]))
    middleware = [
        Middleware(BodyTimeout, timeout=settings.http_body_timeout),  # outermost: every body read
        Middleware(OpsMiddleware, access=access),  # request id, keys, limits, metrics, usage
        Middleware(BodyLimit, max_bytes=settings.http_max_body_bytes),
    ]
    if settings.http_cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.http_cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
            ),
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_exception, Exception: _http_exception},
    )
