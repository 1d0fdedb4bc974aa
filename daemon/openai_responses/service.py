"""The Responses API's calls, for both doors: create (whole or as events), retrieve, delete and
list input items. The HTTP door (``hfd.daemon.http.responses_routes``) writes what these return
as JSON or named SSE events; the IPC door (the ``responses.*`` rows of the operation table)
sends the events as ``event`` messages and the response as the ``result``.

A request is translated to a chat completion request and served by the chat path; its body or
chunks are translated back as the chat row's reply makes them. With ``store`` (the default) the
finished response is kept under the state dir (``ResponseStore``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from hfd.client.errors import HfdError, InvalidRequest, NotFound
from hfd.daemon import responses
from hfd.daemon.openai_responses import output, translate
from hfd.daemon.openai_responses.schema import ResponsesRequest
from hfd.daemon.openai_responses.store import ResponseStore

if TYPE_CHECKING:
    from hfd.daemon.results import Generation
    from hfd.daemon.service import Service

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def store_for(service: Service) -> ResponseStore:
    s = service.settings
    return ResponseStore(
        s.state_dir / "responses", max_age=s.responses_max_age, max_count=s.responses_max_count
    )


def _not_found(rid: str) -> NotFound:
    return NotFound(f"no response with id {rid!r} (it may have expired)", param="response_id")


@dataclass
class Started:
    """A created response whose generation runs: ``gen`` the chat generation, ``base`` the
    response object before output, ``keep`` stores the final response (when ``store``)."""

    gen: Generation
    base: dict[str, Any]
    keep: Callable[[dict[str, Any]], Awaitable[None]]

    def events(self, events: output.Events | None = None) -> AsyncIterator[dict[str, Any]]:
        """The Responses events, from ``response.created`` to ``response.completed`` (made by
        ``events``, whose ``error_event`` a door may need too)."""
        events = events or output.Events(self.base, self.keep)
        return events.stream(responses.CHAT.chunks(self.gen, include_usage=True))

    async def whole(self, text: str) -> dict[str, Any]:
        """The final response from the generation's whole ``text``, stored when asked."""
        final = output.from_chat(self.base, responses.CHAT.whole(self.gen, text))
        await self.keep(final)
        return final


async def start(service: Service, req: ResponsesRequest) -> Started:
    """Check ``req``, continue its ``previous_response_id``, and start the chat generation."""
    req.check_supported()
    store = store_for(service)
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

    async def keep(final: dict[str, Any]) -> None:
        if req.store:
            record = {"response": final, "input": items, "conversation": [*history, *items]}
            await anyio.to_thread.run_sync(store.put, rid, record)

    return Started(gen, output.skeleton(rid, req, req.previous_response_id), keep)


async def create(service: Service, req: ResponsesRequest, emit: Emit | None) -> dict[str, Any]:
    """The IPC door's create: each event to ``emit`` (with ``stream``), then the final response."""
    started = await start(service, req)
    gen = started.gen
    try:
        if emit is None:
            async with gen:
                text = await gen.text()
            return await started.whole(text)
        events = started.events()
        last: dict[str, Any] = {}
        try:
            async for event in events:
                last = event
                await emit(event)
        except HfdError as exc:
            raise translate.renamed(exc) from exc
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
        return dict(last.get("response") or {})
    finally:
        with anyio.CancelScope(shield=True):
            await gen.aclose()


async def retrieve(service: Service, params: dict[str, Any]) -> dict[str, Any]:
    rid = _response_id(params)
    record = await anyio.to_thread.run_sync(store_for(service).get, rid)
    if record is None:
        raise _not_found(rid)
    response: dict[str, Any] = record["response"]
    return response


async def delete(service: Service, params: dict[str, Any]) -> dict[str, Any]:
    rid = _response_id(params)
    if not await anyio.to_thread.run_sync(store_for(service).delete, rid):
        raise _not_found(rid)
    return {"id": rid, "object": "response.deleted", "deleted": True}


async def input_items(service: Service, params: dict[str, Any]) -> dict[str, Any]:
    """The stored input items, newest first as OpenAI lists them; ``order: "asc"`` for the
    sent order."""
    rid = _response_id(params)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"order must be 'asc' or 'desc', not {order!r}", param="order")
    record = await anyio.to_thread.run_sync(store_for(service).get, rid)
    if record is None:
        raise _not_found(rid)
    data = [{"id": item.get("id") or f"{rid}_in{i}", **item} for i, item in enumerate(record["input"])]
    if order == "desc":
        data.reverse()
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


def _response_id(params: dict[str, Any]) -> str:
    rid = params.get("response_id")
    if not isinstance(rid, str) or not rid or len(rid) > 100:
        raise InvalidRequest("response_id must be a response's id (a string)", param="response_id")
    return rid


__all__ = ["Started", "create", "delete", "input_items", "retrieve", "start", "store_for"]
