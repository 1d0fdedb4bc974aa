"""The Responses API's routes: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/{response_id}``, ``GET /v1/responses/{response_id}/input_items``.

A request is translated to a chat completion request (``hfd.daemon.openai_responses``) and
served by the chat path; its body or chunks are translated back, as the chat route's reply
(``operations.BY_OP[chat].reply``) makes them. With ``store`` (the default) the finished response
is kept (``ResponseStore``); errors are OpenAI's envelope, as on every OpenAI route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.client import protocol as p
from hfd.client.errors import HfdError, InvalidRequest, NotFound
from hfd.daemon.http.disconnect import whole_text
from hfd.daemon.http.errors import as_hfd_error, guarded, public_message
from hfd.daemon.http.sse import named_event, named_events
from hfd.daemon.openai_responses import output, translate
from hfd.daemon.openai_responses.schema import ResponsesRequest
from hfd.daemon.openai_responses.store import ResponseStore
from hfd.daemon.operations import BY_OP
from hfd.daemon.schema import parse
from hfd.daemon.service import Service

ReadJson = Callable[[Request], Awaitable[Any]]


def store_for(service: Service) -> ResponseStore:
    s = service.settings
    return ResponseStore(
        s.state_dir / "responses", max_age=s.responses_max_age, max_count=s.responses_max_count
    )


def _not_found(rid: str) -> NotFound:
    return NotFound(f"no response with id {rid!r} (it may have expired)", param="response_id")


def routes(service: Service, read_json: ReadJson) -> dict[str, Route]:
    """The routes by operation name (the table's ``responses.*`` rows)."""
    store = store_for(service)
    chat_reply = BY_OP[p.OP_CHAT].reply
    assert chat_reply is not None

    async def create(request: Request) -> Response:
        req = parse(ResponsesRequest, await read_json(request))
        req.check_supported()
        history: list[dict[str, Any]] = []
        if req.previous_response_id is not None:
            prev = await anyio.to_thread.run_sync(store.get, req.previous_response_id)
            if prev is None:
                raise InvalidRequest(
                    f"previous response {req.previous_response_id!r} is not stored here (never stored, "
                    "deleted, or expired)",
                    param="previous_response_id",
                )
            history = [*prev["conversation"], *prev["response"]["output"]]
        items = translate.input_items(req)
        chat_req = translate.chat_request(req, [*history, *items], len(history))
        try:
            gen = await service.chat(chat_req)
        except HfdError as exc:
            raise translate.renamed(exc) from exc
        rid = output.new_id("resp")
        base = output.skeleton(rid, req, req.previous_response_id)

        async def keep(final: dict[str, Any]) -> None:
            if req.store:
                record = {"response": final, "input": items, "conversation": [*history, *items]}
                await anyio.to_thread.run_sync(store.put, rid, record)

        if req.stream:
            events = output.Events(base, keep)

            def error(exc: BaseException) -> bytes:
                err = translate.renamed(as_hfd_error(exc))
                return named_event(events.error_event(err.code, public_message(err), err.param))

            return named_events(events.stream(chat_reply.chunks(gen, include_usage=True)), gen.aclose, error)
        text = await whole_text(gen, request.receive)
        if text is None:
            return Response(status_code=499)
        final = output.from_chat(base, chat_reply.whole(gen, text))
        await keep(final)
        return JSONResponse(final)

    async def retrieve(request: Request) -> Response:
        rid = request.path_params["response_id"]
        record = await anyio.to_thread.run_sync(store.get, rid)
        if record is None:
            raise _not_found(rid)
        return JSONResponse(record["response"])

    async def delete(request: Request) -> Response:
        rid = request.path_params["response_id"]
        if not await anyio.to_thread.run_sync(store.delete, rid):
            raise _not_found(rid)
        return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})

    async def input_items(request: Request) -> Response:
        rid = request.path_params["response_id"]
        record = await anyio.to_thread.run_sync(store.get, rid)
        if record is None:
            raise _not_found(rid)
        data = [{"id": item.get("id") or f"{rid}_in{i}", **item} for i, item in enumerate(record["input"])]
        # Newest first, as OpenAI lists them by default; ?order=asc for the sent order.
        if request.query_params.get("order", "desc") != "asc":
            data.reverse()
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": False,
            }
        )

    return {
        "responses.create": Route("/v1/responses", guarded(create), methods=["POST"]),
        "responses.retrieve": Route("/v1/responses/{response_id}", guarded(retrieve), methods=["GET"]),
        "responses.delete": Route("/v1/responses/{response_id}", guarded(delete), methods=["DELETE"]),
        "responses.input_items": Route(
            "/v1/responses/{response_id}/input_items", guarded(input_items), methods=["GET"]
        ),
    }
