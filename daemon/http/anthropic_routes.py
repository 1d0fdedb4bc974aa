"""Anthropic's Messages API routes: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

A request is translated to a chat completion request (``hfd.daemon.anthropic``) and served by
the chat path; the chat route's reply (body or chunks) is translated back. Errors on these
routes are Anthropic's envelope (``{"type": "error", "error": {"type", "message"}}``) with the
tree's HTTP status, so the ``anthropic`` SDK raises its own classes (``BadRequestError`` for
400). Errors raised before routing (keys, rate limits, body size) keep OpenAI's envelope: the
SDK reads the status, which is the same. ``x-api-key`` is accepted as an hfd key
(``hfd.daemon.access.auth``); ``anthropic-version`` is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.client import protocol as p
from hfd.client.errors import HfdError
from hfd.daemon.anthropic import output, translate
from hfd.daemon.anthropic.schema import CountTokensRequest, MessagesRequest
from hfd.daemon.http.disconnect import whole_text
from hfd.daemon.http.errors import as_hfd_error, error_headers, guarded, public_message
from hfd.daemon.http.sse import named_event, named_events
from hfd.daemon.operations import BY_OP
from hfd.daemon.results import Generation
from hfd.daemon.schema import ChatCompletionRequest, parse
from hfd.daemon.service import Service

ReadJson = Callable[[Request], Awaitable[Any]]


def error_response(exc: BaseException, *, method: str = "", path: str = "") -> JSONResponse:
    err = as_hfd_error(exc, method=method, path=path)
    return JSONResponse(
        output.error_body(err, public_message(err)), status_code=err.status, headers=error_headers(err)
    )


def error_event(exc: BaseException) -> bytes:
    err = as_hfd_error(exc)
    return named_event(output.error_body(err, public_message(err)))


async def _chat(service: Service, chat_req: ChatCompletionRequest) -> Generation:
    """The chat path's generation; its errors name the fields as this API does."""
    try:
        return await service.chat(chat_req)
    except HfdError as exc:
        raise translate.renamed(exc) from exc


def routes(service: Service, read_json: ReadJson) -> dict[str, Route]:
    """The routes by operation name (the table's ``messages.*`` rows)."""
    chat_reply = BY_OP[p.OP_CHAT].reply
    assert chat_reply is not None

    async def create(request: Request) -> Response:
        req = parse(MessagesRequest, await read_json(request))
        chat_req = translate.chat_request(req)
        gen = await _chat(service, chat_req)
        msg_id = output.new_id()
        if req.stream:
            chunks = chat_reply.chunks(gen, include_usage=True)
            return named_events(
                output.events(msg_id, req.model, gen.prompt_tokens, chunks, lambda: gen.stop_sequence),
                gen.aclose,
                error_event,
            )
        text = await whole_text(gen, request.receive)
        if text is None:
            return Response(status_code=499)
        return JSONResponse(output.message(msg_id, req.model, chat_reply.whole(gen, text), gen.stop_sequence))

    async def count_tokens(request: Request) -> Response:
        req = parse(CountTokensRequest, await read_json(request))
        chat_req = translate.count_request(req)
        # The prompt as the chat path renders it (template, tools), counted when it is
        # submitted; closing before reading cancels the one token asked for.
        gen = await _chat(service, chat_req)
        try:
            count = gen.prompt_tokens
        finally:
            await gen.aclose()
        return JSONResponse({"input_tokens": count})

    return {
        "messages.create": Route("/v1/messages", guarded(create, error_response), methods=["POST"]),
        "messages.count_tokens": Route(
            "/v1/messages/count_tokens", guarded(count_tokens, error_response), methods=["POST"]
        ),
    }
