"""The Responses API's routes: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/{response_id}``, ``GET /v1/responses/{response_id}/input_items``.

What they do is ``hfd.daemon.openai_responses.service``, which the IPC door calls too; here
is how the HTTP door writes it: JSON bodies, named SSE events for a stream (a failure mid-stream
as an ``error`` event), OpenAI's error envelope as on every OpenAI route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.daemon.http.disconnect import whole_text
from hfd.daemon.http.errors import as_hfd_error, guarded, public_message
from hfd.daemon.http.sse import named_event, named_events
from hfd.daemon.openai_responses import output, translate
from hfd.daemon.openai_responses import service as responses_service
from hfd.daemon.openai_responses.schema import ResponsesRequest
from hfd.daemon.schema import parse
from hfd.daemon.service import Service

ReadJson = Callable[[Request], Awaitable[Any]]


def routes(service: Service, read_json: ReadJson) -> dict[str, Route]:
    """The routes by operation name (the table's ``responses.*`` rows)."""

    async def create(request: Request) -> Response:
        req = parse(ResponsesRequest, await read_json(request))
        started = await responses_service.start(service, req)
        gen = started.gen
        if req.stream:
            events = output.Events(started.base, started.keep)

            def error(exc: BaseException) -> bytes:
                err = translate.renamed(as_hfd_error(exc))
                return named_event(events.error_event(err.code, public_message(err), err.param))

            return named_events(started.events(events), gen.aclose, error)
        text = await whole_text(gen, request.receive)
        if text is None:
            return Response(status_code=499)
        return JSONResponse(await started.whole(text))

    async def retrieve(request: Request) -> Response:
        return JSONResponse(await responses_service.retrieve(service, dict(request.path_params)))

    async def delete(request: Request) -> Response:
        return JSONResponse(await responses_service.delete(service, dict(request.path_params)))

    async def input_items(request: Request) -> Response:
        params = {**request.path_params, "order": request.query_params.get("order", "desc")}
        return JSONResponse(await responses_service.input_items(service, params))

    return {
        "responses.create": Route("/v1/responses", guarded(create), methods=["POST"]),
        "responses.retrieve": Route("/v1/responses/{response_id}", guarded(retrieve), methods=["GET"]),
        "responses.delete": Route("/v1/responses/{response_id}", guarded(delete), methods=["DELETE"]),
        "responses.input_items": Route(
            "/v1/responses/{response_id}/input_items", guarded(input_items), methods=["GET"]
        ),
    }
