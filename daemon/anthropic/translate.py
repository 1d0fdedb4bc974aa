"""A Messages request as the chat completion request it means.

- ``system`` (a string or text blocks) -> the system message;
- a user message's ``tool_result`` blocks -> ``role: "tool"`` messages answering their
  ``tool_use_id`` (first, as the results answer the turn before), its text blocks -> one user
  message;
- an assistant message's text blocks -> its content, its ``tool_use`` blocks -> ``tool_calls``
  (``input`` as JSON arguments); ``thinking`` blocks of earlier turns are dropped, as Anthropic
  drops them from the context;
- ``tools`` -> function tools (``input_schema`` is the parameters), ``tool_choice`` auto / any /
  tool / none -> "auto" / "required" / the named function / "none",
  ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``;
- ``output_config.format`` (``json_schema``) -> ``response_format`` json_schema, strict;
- ``stop_sequences`` -> ``stop`` (and past the response cache, whose replays do not keep which
  stop string matched), ``metadata.user_id`` -> ``user``; ``max_tokens``,
  ``temperature``, ``top_p`` as they are (the current SDK's methods no longer take the sampling
  parameters; older SDKs and raw HTTP send them).

Images and documents are refused (400 naming the block).
"""

from __future__ import annotations

import json
from typing import Any

from hfd.client.errors import HfdError, InvalidRequest
from hfd.daemon.anthropic.schema import Block, CountTokensRequest, MessagesRequest
from hfd.daemon.schema import ChatCompletionRequest, ChatMessage, parse

MAX_STOP_SEQUENCES = 4  # what the chat path matches


def _block_text(content: str | list[Block] | None, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, block in enumerate(content):
        if block.type != "text" or block.text is None:
            raise InvalidRequest(
                f"content blocks of type {block.type!r} are not supported here; send text blocks",
                param=f"{param}.{j}.type",
            )
        parts.append(block.text)
    return "\n".join(parts)


def system_text(system: str | list[Block] | None) -> str:
    return _block_text(system, "system")


def chat_messages(req: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = system_text(req.system)
    if system:
        out.append({"role": "system", "content": system})
    for i, message in enumerate(req.messages):
        p = f"messages.{i}.content"
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []  # text and image_url parts, when there are images
        for j, block in enumerate(message.content):
            at = f"{p}.{j}"
            if block.type == "text" and block.text is not None:
                texts.append(block.text)
                parts.append({"type": "text", "text": block.text})
            elif block.type == "image" and message.role == "user":
                parts.append(_image_part(block, at))
            elif block.type == "tool_use" and message.role == "assistant":
                if not block.id or not block.name:
                    raise InvalidRequest("a tool_use block needs id and name", param=f"{at}.id")
                arguments = json.dumps(block.input if block.input is not None else {}, ensure_ascii=False)
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": arguments},
                    }
                )
            elif block.type == "tool_result" and message.role == "user":
                if not block.tool_use_id:
                    raise InvalidRequest("a tool_result block needs tool_use_id", param=f"{at}.tool_use_id")
                text = _block_text(block.content, f"{at}.content")
                if block.is_error:
                    text = f"Error: {text}"
                results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            elif block.type in ("thinking", "redacted_thinking") and message.role == "assistant":
                continue
            else:
                raise InvalidRequest(
                    f"content blocks of type {block.type!r} are not supported in a {message.role} message",
                    param=f"{at}.type",
                )
        out.extend(results)
        if calls:
            out.append({"role": "assistant", "content": "".join(texts) or None, "tool_calls": calls})
        elif len(parts) > len(texts):  # images (vision chat models: hfd.daemon.vision_chat)
            out.append({"role": message.role, "content": parts})
        elif texts or not results:
            out.append({"role": message.role, "content": "".join(texts)})
    return out


def _image_part(block: Block, at: str) -> dict[str, Any]:
    """An ``image`` block with a base64 source as a chat ``image_url`` part (a data: URL)."""
    source = block.source or {}
    if source.get("type") != "base64" or not isinstance(source.get("data"), str):
        raise InvalidRequest("image blocks need a base64 source (url and file sources are not fetched)",
                             param=f"{at}.source")  # fmt: skip
    media = source.get("media_type") if isinstance(source.get("media_type"), str) else "image/png"
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}


def _needs(field: str, model: type[Any], param: str, what: str) -> None:
    # The chat request ignores fields it does not know: refuse rather than drop them.
    if field not in model.model_fields:
        raise InvalidRequest(f"{what} is not supported by this daemon's chat path yet", param=param)


def chat_body(req: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    req.check_supported()
    messages = chat_messages(req)
    if any("tool_calls" in m or m["role"] == "tool" for m in messages):
        _needs("tool_calls", ChatMessage, "messages", "tool_use and tool_result blocks")
    body: dict[str, Any] = {"model": req.model, "messages": messages, "keep_alive": req.keep_alive}
    if req.tools:
        _needs("tools", ChatCompletionRequest, "tools", "tools")
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema or {"type": "object", "properties": {}},
                },
            }
            for t in req.tools
        ]
    choice = req.tool_choice
    if choice is not None:
        _needs("tool_choice", ChatCompletionRequest, "tool_choice", "tool_choice")
        body["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
            "tool": {"type": "function", "function": {"name": choice.name}},
        }[choice.type]
        if choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None:
        _needs("response_format", ChatCompletionRequest, "output_config.format", "output_config.format")
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.schema_, "strict": True},
        }
    return body


def chat_request(req: MessagesRequest) -> ChatCompletionRequest:
    body = chat_body(req)
    stops = req.stop_sequences or []
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"at most {MAX_STOP_SEQUENCES} stop sequences are supported", param="stop_sequences"
        )
    if req.top_k is not None:
        _needs("top_k", ChatCompletionRequest, "top_k", "top_k")
        body["top_k"] = req.top_k
    user = (req.metadata or {}).get("user_id")
    body.update(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=stops or None,
        user=user if isinstance(user, str) else None,
    )
    if stops:  # a cached reply does not keep which stop string ended it (stop_sequence)
        body["cache"] = False
    return checked(body)


def count_request(req: CountTokensRequest) -> ChatCompletionRequest:
    # One token asked for: the prompt is what is counted; the response cache is not involved.
    return checked({**chat_body(req), "max_tokens": 1, "cache": False})


def checked(body: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return parse(ChatCompletionRequest, {k: v for k, v in body.items() if v is not None})
    except HfdError as exc:
        raise renamed(exc) from exc


def renamed(exc: HfdError) -> HfdError:
    """``exc`` with a chat field in ``param`` named as this API names it."""
    param = exc.param
    if param is not None:
        new = param
        if param == "stop" or param.startswith("stop."):
            new = "stop_sequences" + param[4:]
        elif param.startswith("tools.") and ".function.parameters" in param:
            new = param.replace(".function.parameters", ".input_schema", 1)
        elif param.startswith("tools.") and ".function." in param:
            new = param.replace(".function.", ".", 1)
        elif param.startswith("response_format"):
            new = "output_config.format"
        elif param.startswith("messages."):
            new = "messages"  # chat messages are not one-to-one with these
        if new != param:
            exc.message = exc.message.replace(f"'{param}'", f"'{new}'")
            exc.args = (exc.message,)
            exc.param = new
    return exc
