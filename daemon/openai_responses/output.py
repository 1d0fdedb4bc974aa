"""A chat completion (its body, or its stream of chunks) as a Responses ``response`` object and
its output items, and as the stream of Responses events.

Output items: the assistant's text is one ``message`` item with one ``output_text`` part (also
when empty and there is no tool call, as OpenAI answers); each tool call is a ``function_call``
item whose ``call_id`` is the chat tool call's id. ``finish_reason`` "length" makes the response
``incomplete`` (``incomplete_details.reason`` "max_output_tokens").

Events, each with a ``sequence_number``: ``response.created``, ``response.in_progress``; per
text item ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``; per function call ``response.output_item.added``,
``response.function_call_arguments.delta``..., ``response.function_call_arguments.done``,
``response.output_item.done``; then ``response.completed`` (or ``response.incomplete``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hfd.daemon.openai_responses.schema import NamedChoice, ResponsesRequest
from hfd.daemon.tools.output import reply_parts


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def skeleton(rid: str, req: ResponsesRequest, previous: str | None) -> dict[str, Any]:
    """The response object before any output: what ``response.created`` carries."""
    fmt = req.text.format if req.text is not None and req.text.format is not None else None
    choice = req.tool_choice
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": [],
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": previous,
        "reasoning": {"effort": None, "summary": None},
        "store": req.store,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        "tool_choice": (
            {"type": "function", "name": choice.name}
            if isinstance(choice, NamedChoice)
            else (choice or "auto")
        ),
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or ()],
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": req.user,
        "metadata": dict(req.metadata or {}),
    }


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    prompt = int((chat_usage or {}).get("prompt_tokens", 0))
    completion = int((chat_usage or {}).get("completion_tokens", 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def finished(
    base: dict[str, Any], output: list[dict[str, Any]], finish_reason: str | None, chat_usage: Any
) -> dict[str, Any]:
    """The response object once the generation is over."""
    incomplete = finish_reason == "length"
    status = "incomplete" if incomplete else "completed"
    for item in output:
        item["status"] = status
    return {
        **base,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": output,
        "usage": usage(chat_usage),
    }


def from_chat(base: dict[str, Any], chat: dict[str, Any]) -> dict[str, Any]:
    """The whole response for a chat completion body."""
    choice, text, calls = reply_parts(chat)
    output: list[dict[str, Any]] = []
    if text is not None:
        output.append(message_item(new_id("msg"), text, "completed"))
    for call in calls:
        fn = call.get("function") or {}
        output.append(
            call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                fn.get("name", ""),
                fn.get("arguments", ""),
                "completed",
            )
        )
    return finished(base, output, choice.get("finish_reason"), chat.get("usage"))


class Events:
    """The Responses events of one streamed response, made from the chat chunks (which must
    include the usage chunk). ``done`` gets the final response before the last event is sent
    (the route stores it there)."""

    def __init__(self, base: dict[str, Any], done: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.base = base
        self.done = done
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self._text: dict[str, Any] | None = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # open function_call items by chat index

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _open_text(self) -> list[dict[str, Any]]:
        item = message_item(new_id("msg"), None, "in_progress")
        self._text = item
        index = len(self.output)
        self.output.append(item)
        item["content"] = []
        return [
            self._event("response.output_item.added", output_index=index, item=dict(item, content=[])),
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=text_part(""),
            ),
        ]

    def _close_text(self) -> list[dict[str, Any]]:
        item = self._text
        if item is None:
            return []
        self._text = None
        index = self.output.index(item)
        text = item.pop("_text", "")
        item["content"] = [text_part(text)]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=text_part(text)),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _close_calls(self) -> list[dict[str, Any]]:
        out = []
        for item in self._calls.values():
            index = self.output.index(item)
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._calls = {}
        return out

    def _text_delta(self, delta: str) -> list[dict[str, Any]]:
        out = [] if self._text is not None else self._close_calls() + self._open_text()
        item = self._text
        assert item is not None
        item["_text"] = item.get("_text", "") + delta
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self.output.index(item),
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return out

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_text()
        index = int(call.get("index", 0))
        fn = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            item = call_item(
                new_id("fc"), str(call.get("id") or new_id("call")), fn.get("name") or "", "", "in_progress"
            )
            self._calls[index] = item
            self.output.append(item)
            out.append(
                self._event("response.output_item.added", output_index=len(self.output) - 1, item=dict(item))
            )
        elif fn.get("name"):
            item["name"] += fn["name"]
        arguments = fn.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.output.index(item),
                    delta=arguments,
                )
            )
        return out

    async def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        yield self._event("response.created", response=self.base)
        yield self._event("response.in_progress", response=self.base)
        finish_reason: str | None = None
        chat_usage: Any = None
        async for chunk in chunks:
            if chunk.get("usage"):
                chat_usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                for event in self._text_delta(delta["content"]) if delta.get("content") else ():
                    yield event
                for call in delta.get("tool_calls") or ():
                    for event in self._call_delta(call):
                        yield event
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        if not self.output:  # no text and no call: an empty message, as the whole body has
            for event in self._open_text():
                yield event
        for event in self._close_text() + self._close_calls():
            yield event
        final = finished(self.base, self.output, finish_reason, chat_usage)
        await self.done(final)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield self._event(kind, response=final)

    def error_event(self, code: str, message: str, param: str | None) -> dict[str, Any]:
        return self._event("error", code=code, message=message, param=param)
