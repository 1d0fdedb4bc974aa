"""A Responses request as the chat completion request it means.

The conversation is the stored one of ``previous_response_id`` (its items and its output)
followed by this request's ``input``; ``instructions`` become the system message (as in OpenAI,
the previous response's instructions are not carried over). Items map to chat messages:

- ``message`` (roles user, assistant, system, developer; ``input_text`` / ``output_text``
  parts) -> a message with that role and the parts' text (with ``input_image`` parts: text and
  ``image_url`` parts, for vision chat models);
- ``function_call`` -> a ``tool_calls`` entry of an assistant message (consecutive calls, and
  the assistant's text just before them, make one message, as the model produced them);
- ``function_call_output`` -> a ``role: "tool"`` message answering its ``call_id``.

``tools`` (function tools), ``tool_choice`` and ``text.format`` become the chat request's
``tools``, ``tool_choice`` and ``response_format``. Errors the chat path raises name the chat
request's fields; ``responses_param`` renames them to this request's.
"""

from __future__ import annotations

from typing import Any

from hfd.client.errors import HfdError, InvalidRequest
from hfd.daemon.openai_responses.schema import ContentPart, InputItem, NamedChoice, ResponsesRequest
from hfd.daemon.schema import ChatCompletionRequest, ChatMessage, parse

_TEXT_PARTS = ("input_text", "output_text", "text")
_ROLES = ("user", "assistant", "system", "developer")


def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """This request's ``input`` as items (a string is one user message)."""
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    return [item.model_dump(exclude_none=True) for item in req.input]


def _text(content: str | list[ContentPart] | None, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if part.type not in _TEXT_PARTS:
            raise InvalidRequest(
                f"content of type {part.type!r} is not supported; send input_text or output_text parts",
                param=f"{param}.{j}.type",
            )
        if part.text is None:
            raise InvalidRequest(f"a {part.type} part needs text", param=f"{param}.{j}.text")
        parts.append(part.text)
    return "".join(parts)


def _content(content: str | list[ContentPart] | None, param: str) -> str | list[dict[str, Any]]:
    """A message's content: its text, or chat parts when it holds ``input_image`` parts (an image
    as a data: URL becomes an ``image_url`` part, for vision chat models: hfd.daemon.vision_chat)."""
    if not isinstance(content, list) or not any(part.type == "input_image" for part in content):
        return _text(content, param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part.type != "input_image":
            parts.append({"type": "text", "text": _text([part], f"{param}.{j}")})
        elif part.image_url is None:
            raise InvalidRequest(
                "an input_image part needs image_url (file_id is not supported)", param=f"{param}.{j}"
            )
        else:
            parts.append({"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}})
    return parts


def chat_messages(items: list[dict[str, Any]], first_input: int) -> list[dict[str, Any]]:
    """Chat messages for ``items``; those from ``first_input`` on are this request's ``input``
    (named ``input.N`` in errors), those before it come from the stored conversation."""
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        p = f"input.{i - first_input}" if i >= first_input else f"previous_response_id (item {i})"
        item = InputItem.model_validate(raw)
        if item.type == "message":
            if item.role not in _ROLES:
                raise InvalidRequest(
                    f"a message's role must be one of {', '.join(_ROLES)}, not {item.role!r}",
                    param=f"{p}.role",
                )
            messages.append({"role": item.role, "content": _content(item.content, f"{p}.content")})
        elif item.type == "function_call":
            for name in ("call_id", "name", "arguments"):
                if getattr(item, name) is None:
                    raise InvalidRequest(f"a function_call item needs {name}", param=f"{p}.{name}")
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            if item.call_id is None:
                raise InvalidRequest("a function_call_output item needs call_id", param=f"{p}.call_id")
            if item.output is None:
                raise InvalidRequest("a function_call_output item needs output", param=f"{p}.output")
            messages.append(
                {"role": "tool", "tool_call_id": item.call_id, "content": _text(item.output, f"{p}.output")}
            )
        else:
            raise InvalidRequest(
                f"input items of type {item.type!r} are not supported; send message, function_call "
                "and function_call_output items",
                param=f"{p}.type",
            )
    return messages


def _needs(field: str, model: type[Any], param: str, what: str) -> None:
    # The chat request ignores fields it does not know: refuse rather than drop them.
    if field not in model.model_fields:
        raise InvalidRequest(f"{what} is not supported by this daemon's chat path yet", param=param)


def chat_request(
    req: ResponsesRequest, items: list[dict[str, Any]], first_input: int
) -> ChatCompletionRequest:
    """The chat completion request for a Responses request over ``items`` (see the module doc)."""
    messages = chat_messages(items, first_input)
    if req.instructions:
        messages.insert(0, {"role": "system", "content": req.instructions})
    if not messages:
        raise InvalidRequest("input is empty", param="input")
    if any("tool_calls" in m or m["role"] == "tool" for m in messages):
        _needs("tool_calls", ChatMessage, "input", "function_call and function_call_output items")
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": req.user,
        "keep_alive": req.keep_alive,
    }
    if req.tools:
        _needs("tools", ChatCompletionRequest, "tools", "function tools")
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    k: v
                    for k, v in (
                        ("name", t.name),
                        ("description", t.description),
                        ("parameters", t.parameters),
                        ("strict", t.strict),
                    )
                    if v is not None
                },
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        _needs("tool_choice", ChatCompletionRequest, "tool_choice", "tool_choice")
        choice = req.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if isinstance(choice, NamedChoice)
            else choice
        )
    if req.parallel_tool_calls is not None:
        _needs("parallel_tool_calls", ChatCompletionRequest, "parallel_tool_calls", "parallel_tool_calls")
        body["parallel_tool_calls"] = req.parallel_tool_calls
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type != "text":
        _needs("response_format", ChatCompletionRequest, "text.format", f"text.format {fmt.type}")
        if fmt.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            if fmt.schema_ is None:
                raise InvalidRequest("a json_schema format needs a schema", param="text.format.schema")
            schema: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_}
            if fmt.strict is not None:
                schema["strict"] = fmt.strict
            if fmt.description is not None:
                schema["description"] = fmt.description
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
    try:
        return parse(ChatCompletionRequest, {k: v for k, v in body.items() if v is not None})
    except HfdError as exc:
        raise renamed(exc, first_input) from exc


# The chat request's fields, as this request names them.
_RENAMES = (
    ("max_tokens", "max_output_tokens"),
    ("max_completion_tokens", "max_output_tokens"),
    ("response_format.json_schema", "text.format"),
    ("response_format", "text.format"),
    ("prompt", "input"),
)


def responses_param(param: str | None, first_input: int = 0) -> str | None:
    """The Responses field that a chat path error's ``param`` names."""
    if param is None:
        return None
    if param.startswith("messages"):
        return "input"  # the messages are not one-to-one with the items
    if param.startswith("tools.") and ".function." in param:
        return param.replace(".function.", ".", 1)
    for old, new in _RENAMES:
        if param == old or param.startswith(old + "."):
            return new + param[len(old) :]
    return param


def renamed(exc: HfdError, first_input: int = 0) -> HfdError:
    """``exc`` with its ``param`` (and the message's mention of it) in this request's names."""
    new = responses_param(exc.param, first_input)
    if new != exc.param and exc.param:
        exc.message = exc.message.replace(f"'{exc.param}'", f"'{new}'")
        exc.args = (exc.message,)
        exc.param = new
    return exc
