"""The rules OpenAI answers 400 for in a tool request, checked before the model is touched:
names, how many tools, schemas that are objects, a named ``tool_choice`` that names a listed
tool, and a tool history that the chat template can render (arguments that are JSON objects,
tool replies that say which call they answer)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from hfd.client.errors import InvalidRequest

if TYPE_CHECKING:
    from hfd.daemon.schema import ChatCompletionRequest

MAX_TOOLS = 128  # as OpenAI
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def validate(req: ChatCompletionRequest) -> None:
    tools = req.tools or []
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"{len(tools)} tools exceed the limit of {MAX_TOOLS}", param="tools")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        fn = tool.function
        if not NAME.match(fn.name):
            raise InvalidRequest(
                f"tool name {fn.name!r} must be 1 to 64 letters, digits, '_' or '-'",
                param=f"tools[{i}].function.name",
            )
        if fn.name in seen:
            raise InvalidRequest(f"two tools are named {fn.name!r}", param=f"tools[{i}].function.name")
        seen.add(fn.name)
        params = fn.parameters
        if params is not None and params.get("type", "object") != "object":
            raise InvalidRequest(
                'a function\'s parameters must be a JSON schema of an object ("type": "object")',
                param=f"tools[{i}].function.parameters",
            )
    choice = req.tool_choice
    if choice is not None and not isinstance(choice, str):
        if choice.function.name not in seen:
            raise InvalidRequest(
                f"tool_choice names the function {choice.function.name!r}, which is not in tools",
                param="tool_choice",
            )
    elif choice == "required" and not tools:
        raise InvalidRequest("tool_choice 'required' needs tools", param="tool_choice")
    _check_history(req)


def _check_history(req: ChatCompletionRequest) -> None:
    for i, msg in enumerate(req.messages):
        if msg.tool_calls and msg.role != "assistant":
            raise InvalidRequest(
                "only assistant messages carry tool_calls", param=f"messages[{i}].tool_calls"
            )
        for j, call in enumerate(msg.tool_calls or []):
            param = f"messages[{i}].tool_calls[{j}].function.arguments"
            try:
                value = json.loads(call.function.arguments or "{}")
            except ValueError:
                raise InvalidRequest("a tool call's arguments must be JSON text", param=param) from None
            if not isinstance(value, dict):
                raise InvalidRequest("a tool call's arguments must be a JSON object", param=param)
        if msg.role == "tool" and not msg.tool_call_id:
            raise InvalidRequest("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")
