"""A chat completion (its body, or its stream of chunks) as an Anthropic message and its stream
of events, and errors in Anthropic's shape.

``stop_reason``: "length" -> ``max_tokens``, "tool_calls" -> ``tool_use``, "stop" ->
``end_turn``, or ``stop_sequence`` with ``stop_sequence`` the matched string when one of the
request's stop sequences ended the text (the generation scheduler says which). Tool calls
become ``tool_use`` blocks whose ``input`` is the parsed arguments.

Stream events (each an SSE event named by its type): ``message_start``, ``ping``; per block
``content_block_start``, ``content_block_delta`` (``text_delta`` or ``input_json_delta``)...,
``content_block_stop``; then ``message_delta`` (``stop_reason``, output tokens) and
``message_stop``. An error after the start is an ``error`` event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from hfd.client.errors import HfdError
from hfd.daemon.tools.output import reply_parts

_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "stop": "end_turn"}

# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def stop_reason(finish_reason: str | None, stop_sequence: str | None = None) -> str:
    if stop_sequence is not None and finish_reason in (None, "stop"):
        return "stop_sequence"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _tool_input(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return {"arguments": arguments}  # what the model wrote, not lost


def message(
    msg_id: str, model: str, chat: dict[str, Any], stop_sequence: str | None = None
) -> dict[str, Any]:
    """The whole message for a chat completion body; ``stop_sequence``: the stop string that
    ended it, if one did."""
    choice, text, calls = reply_parts(chat)
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    for call in calls:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": _tool_input(fn.get("arguments", "")),
            }
        )
    u = chat.get("usage") or {}
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), stop_sequence),
        "stop_sequence": stop_sequence,
        "usage": usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))),
    }


async def events(
    msg_id: str,
    model: str,
    input_tokens: int,
    chunks: AsyncIterator[dict[str, Any]],
    stop_sequence: Callable[[], str | None] = lambda: None,
) -> AsyncIterator[dict[str, Any]]:
    """The message's events, made from the chat chunks (which must include the usage chunk);
    ``stop_sequence`` is asked at the end which stop string ended the text, if one did."""
    yield {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(input_tokens, 0),
        },
    }
    yield {"type": "ping"}
    index = -1
    open_kind: str | None = None  # "text", or the chat index of the open tool call
    finish: str | None = None
    output_tokens = 0
    async for chunk in chunks:
        if chunk.get("usage"):
            output_tokens = int(chunk["usage"].get("completion_tokens", 0))
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if open_kind != "text":
                    if open_kind is not None:
                        yield {"type": "content_block_stop", "index": index}
                    index += 1
                    open_kind = "text"
                    yield {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": delta["content"]},
                }
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                key = f"call{call.get('index', 0)}"
                if open_kind != key:
                    if open_kind is not None:
                        yield {"type": "content_block_stop", "index": index}
                    index += 1
                    open_kind = key
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    yield {"type": "content_block_start", "index": index, "content_block": block}
                if fn.get("arguments"):
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                    }
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if open_kind is None:  # no output at all: one empty text block, as the whole body has
        index += 1
        yield {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    yield {"type": "content_block_stop", "index": index}
    matched = stop_sequence()
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(finish, matched), "stop_sequence": matched},
        "usage": {"output_tokens": output_tokens},
    }
    yield {"type": "message_stop"}


def error_body(err: HfdError, message: str) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``: Anthropic's error envelope."""
    kind = _ERROR_TYPES.get(err.status, "invalid_request_error" if 400 <= err.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
