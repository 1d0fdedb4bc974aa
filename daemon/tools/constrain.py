"""The constraint for ``tool_choice: "required"`` and a named function: the output must be one
call ``{"name": ..., "arguments": {...}}`` of one of the tools (of the named one), its arguments
valid against the function's parameters schema. It is read back by the ``json`` parser.

One call, also when ``parallel_tool_calls`` is true: a grammar that allowed a list would let a
model that does not stop on its own append calls until ``max_tokens`` cut the JSON.
"""

from __future__ import annotations

import json
from typing import Any

from hfd.backends.constraints import ConstraintSpec

EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """The JSON schema of one call of ``tools`` (OpenAI tool dicts), or of the function ``name``."""
    options = []
    for tool in tools:
        fn = tool["function"]
        if name is not None and fn["name"] != name:
            continue
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": fn["name"]},
                    "arguments": fn.get("parameters") or EMPTY_OBJECT,
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_call_spec(tools: list[dict[str, Any]], name: str | None = None) -> ConstraintSpec:
    """The spec for a required call (``name``: a named one), strict as OpenAI's strict mode."""
    value = json.dumps(call_schema(tools, name), sort_keys=True, separators=(",", ":"))
    return ConstraintSpec("json_schema", value, strict=True, param="tool_choice")
