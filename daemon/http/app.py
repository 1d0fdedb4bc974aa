"""The HTTP door: an ASGI app with the OpenAI-compatible routes and a few admin routes.

Routes translate between JSON and the service; they hold no model logic. Every route runs
inside ``_endpoint``, which hands any exception to the one error mapping
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
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from hfd.client.errors import InvalidJSON, ModelNotFound
from hfd.daemon import pulls
from hfd.daemon.access.control import Access
from hfd.daemon.http import admin, openai_types, ops_routes
from hfd.daemon.http.errors import error_response
from hfd.daemon.http.limits import BodyLimit, BodyTimeout
from hfd.daemon.http.middleware import OpsMiddleware
from hfd.daemon.http.pull_stream import NdjsonPull
from hfd.daemon.http.sse import EventStream, wait_disconnect
from hfd.daemon.metrics import Metrics
from hfd.daemon.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelRequest,
    parse,
    parse_keep_alive,
)
from hfd.daemon.service import Generation, Service
from hfd.daemon.settings import Settings

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def _endpoint(fn: Endpoint) -> Endpoint:
    @functools.wraps(fn)
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:
            return error_response(exc, method=request.method, path=request.url.path)

    return run


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


async def collect_text(gen: Generation, receive: Receive) -> str | None:
    """All of a generation's text; None when the client went away first (the generation is
    then closed, which cancels the sequence)."""
    parts: list[str] = []
    gone = False
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal gone
            await wait_disconnect(receive)
            gone = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            async for piece in gen:
                parts.append(piece.text)
        except Exception as exc:  # kept out of the task group's exception group
            error = exc
        finally:
            await gen.aclose()
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    if gone:
        log.info("client disconnected; generation cancelled", extra={"id": gen.id, "model": gen.model})
        return None
    return "".join(parts)


async def _answer(
    request: Request,
    req: ChatCompletionRequest | CompletionRequest,
    gen: Generation,
    chunks: Callable[..., AsyncIterator[dict[str, Any]]],
    whole: Callable[[Generation, str], dict[str, Any]],
) -> Response:
    """A generation as the client asked for it: an SSE stream of ``chunks``, or one ``whole``
    JSON body (499 when the client went away before it was done)."""
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return EventStream(chunks(gen, include_usage=usage), gen.aclose)
    text = await collect_text(gen, request.receive)
    if text is None:
        return Response(status_code=499)
    return JSONResponse(whole(gen, text))


async def until_disconnect(work: Callable[[], Awaitable[T]], receive: Receive) -> tuple[bool, T | None]:
    """``(True, result)`` of ``work``, or ``(False, None)`` when the client went away first
    (``work`` is then cancelled)."""
    outcome: list[T] = []
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await wait_disconnect(receive)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            outcome.append(await work())
        except Exception as exc:  # kept out of the task group's exception group
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return (True, outcome[0]) if outcome else (False, None)


class Routes:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def health(self, request: Request) -> Response:
        return JSONResponse(self.service.health())

    async def list_models(self, request: Request) -> Response:
        return JSONResponse(openai_types.model_list(self.service.models()))

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for model in self.service.models():
            if model["id"] == model_id:
                return JSONResponse(model)
        raise ModelNotFound(f"model {model_id!r} is not served here", param="model")

    async def chat(self, request: Request) -> Response:
        req = parse(ChatCompletionRequest, await read_json(request))
        gen = await self.service.chat(req)
        return await _answer(request, req, gen, openai_types.chat_chunks, openai_types.chat_completion)

    async def complete(self, request: Request) -> Response:
        req = parse(CompletionRequest, await read_json(request))
        gen = await self.service.complete(req)
        return await _answer(request, req, gen, openai_types.completion_chunks, openai_types.completion)

    async def embeddings(self, request: Request) -> Response:
        req = parse(EmbeddingRequest, await read_json(request))
        # A client that hangs up cancels its embedding: the encoder scheduler then drops its
        # items not yet computed at the next batch boundary.
        finished, result = await until_disconnect(lambda: self.service.embed(req), request.receive)
        if not finished:
            log.info("client disconnected; embeddings cancelled", extra={"model": req.model})
            return Response(status_code=499)
        assert result is not None
        return JSONResponse(openai_types.embeddings(result, req.encoding_format))

    async def ps(self, request: Request) -> Response:
        return JSONResponse({"models": self.service.ps()})

    async def load(self, request: Request) -> Response:
        req = parse(ModelRequest, await read_json(request))
        return JSONResponse(await self.service.load(req.model, parse_keep_alive(req.keep_alive)))

    async def unload(self, request: Request) -> Response:
        req = parse(ModelRequest, await read_json(request))
        return JSONResponse({"model": req.model, "unloaded": await self.service.unload(req.model)})

    async def pull(self, request: Request) -> Response:
        req = parse(pulls.PullRequest, await read_json(request))
        # A malformed reference is an error status, not a stream that fails at once.
        ref = self.service.pulls.check_ref(req.model)
        if req.stream:
            return NdjsonPull(lambda emit: self.service.pulls.pull(ref, emit))
        finished, result = await until_disconnect(lambda: self.service.pulls.pull(ref), request.receive)
        if not finished:
            log.info("client disconnected; pull cancelled", extra={"model": ref})
            return Response(status_code=499)
        return JSONResponse(result)

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.service.stats())

    async def version(self, request: Request) -> Response:
        return JSONResponse(admin.version())

    async def hardware(self, request: Request) -> Response:
        return JSONResponse(await admin.hardware())


async def _http_exception(request: Request, exc: Exception) -> Response:
    return error_response(exc, method=request.method, path=request.url.path)


def create_app(service: Service, settings: Settings, access: Access | None = None) -> Starlette:
    """The ASGI app. ``access``: the daemon's one (hfd.daemon.app); an app made alone gets its own."""
    if access is None:
        access = Access(settings, Metrics())
    r = Routes(service)
    routes = [
        Route("/health", _endpoint(r.health), methods=["GET"]),
        Route("/v1/models", _endpoint(r.list_models), methods=["GET"]),
        # Model names may contain '/' (org/name), hence the path converter.
        Route("/v1/models/{model_id:path}", _endpoint(r.get_model), methods=["GET"]),
        Route("/v1/chat/completions", _endpoint(r.chat), methods=["POST"]),
        Route("/v1/completions", _endpoint(r.complete), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(r.embeddings), methods=["POST"]),
        Route("/api/ps", _endpoint(r.ps), methods=["GET"]),
        Route("/api/load", _endpoint(r.load), methods=["POST"]),
        Route("/api/unload", _endpoint(r.unload), methods=["POST"]),
        Route("/api/pull", _endpoint(r.pull), methods=["POST"]),
        Route("/api/stats", _endpoint(r.stats), methods=["GET"]),
        Route("/api/version", _endpoint(r.version), methods=["GET"]),
        Route("/api/hardware", _endpoint(r.hardware), methods=["GET"]),
    ]
    routes += ops_routes.routes(access)  # /ready, /metrics
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
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
            ),
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_exception, Exception: _http_exception},
    )
