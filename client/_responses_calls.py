"""Request builders for the Responses API (``client.responses``): create, retrieve, delete and
the input items of a stored response. Replies are the API's own JSON objects (dicts), as the
HTTP door sends them; a streamed create yields the API's events (``response.created``,
``response.output_text.delta``, ..., ``response.completed``), each a dict with its ``type``."""

from __future__ import annotations

from typing import Any, Literal

from hfd.client._calls import STREAM, Call, _body, clean
from hfd.client.protocol import (
    OP_RESPONSES_CREATE,
    OP_RESPONSES_DELETE,
    OP_RESPONSES_INPUT_ITEMS,
    OP_RESPONSES_RETRIEVE,
)


def _event(body: dict[str, Any]) -> dict[str, Any]:
    return body


def create(
    model: str,
    input: str | list[dict[str, Any]],
    stream: bool,
    params: dict[str, Any],
) -> Call[Any]:
    """A response to ``input`` (a string or a list of input items); ``params``: instructions,
    previous_response_id, store, max_output_tokens, temperature, top_p, tools, text, timeout, ..."""
    timeout = params.pop("timeout", None)
    body = clean({"model": model, "input": input, "stream": stream, **params})
    if stream:
        return Call(OP_RESPONSES_CREATE, body, _event, timeout, STREAM)
    return Call(OP_RESPONSES_CREATE, body, _body, timeout)


def retrieve(response_id: str, *, timeout: float | None = None) -> Call[dict[str, Any]]:
    """A stored response, by id; ``NotFound`` when it was never stored, deleted or expired."""
    return Call(OP_RESPONSES_RETRIEVE, {"response_id": response_id}, _body, timeout)


def delete(response_id: str, *, timeout: float | None = None) -> Call[dict[str, Any]]:
    """Delete a stored response: ``{"id", "object": "response.deleted", "deleted": true}``."""
    return Call(OP_RESPONSES_DELETE, {"response_id": response_id}, _body, timeout)


def input_items(
    response_id: str, *, order: Literal["asc", "desc"] = "desc", timeout: float | None = None
) -> Call[dict[str, Any]]:
    """The input items of a stored response, a list object (newest first unless ``"asc"``)."""
    return Call(OP_RESPONSES_INPUT_ITEMS, {"response_id": response_id, "order": order}, _body, timeout)
