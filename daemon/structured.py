"""Structured output: what a request asks its output to match, as a ``ConstraintSpec``.

OpenAI's ``response_format`` (``text``, ``json_object``, ``json_schema`` with ``strict``) and
vLLM's extensions ``guided_json``, ``guided_regex``, ``guided_choice`` and ``guided_grammar``
(EBNF), on chat and completions. At most one of them per request. Schemas become canonical JSON
(sorted keys), so equal schemas share one compiled grammar per model and one cache key.

``json_object`` does not require the word "JSON" in the messages (OpenAI does, vLLM does not):
the output is constrained to a JSON object whatever the prompt says, so the rule, there to stop
a model writing whitespace forever when nobody asked it for JSON, protects nothing here.

The engine enforces the spec (``Constrainable.compile_constraint``, in a worker thread so a new
schema never stalls a running batch); an engine that cannot is a 400 naming it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio

from hfd.backends.base import SamplingParams
from hfd.backends.constraints import Constrainable, ConstraintSpec
from hfd.client.errors import InvalidRequest

# The most UTF-8 bytes of a schema, pattern, choice list or grammar (docs/operations.md, limits):
# compiling is super-linear in the worst case, and a real schema is a few KiB.
MAX_SPEC_BYTES = 64 * 1024

_GUIDED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def constraint_spec(req: Any) -> ConstraintSpec | None:
    """The request's structured-output spec, or None for free text. ``req`` is a chat or
    completions request (``daemon.schema``)."""
    asked = [name for name in ("response_format", *_GUIDED) if _given(name, getattr(req, name, None))]
    if len(asked) > 1:
        raise InvalidRequest(f"send one of {', '.join(asked)}, not several", param=asked[1])
    if not asked:
        return None
    name = asked[0]
    value = getattr(req, name)
    if name == "response_format":
        spec = response_format_spec(value)
    elif name == "guided_json":
        schema = _json_value(value, name) if isinstance(value, str) else value
        spec = ConstraintSpec("json_schema", _schema_text(schema, name), strict=True, param=name)
    elif name == "guided_regex":
        spec = ConstraintSpec("regex", _text(value, name), param=name)
    elif name == "guided_choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise InvalidRequest("guided_choice must be a non-empty list of strings", param=name)
        spec = ConstraintSpec("choice", json.dumps(value, ensure_ascii=False), param=name)
    else:
        spec = ConstraintSpec("grammar", _text(value, name), param=name)
    if spec is not None:
        _bounded(spec)
    return spec


def response_format_spec(fmt: Any) -> ConstraintSpec | None:
    """OpenAI's ``response_format`` object as a spec (None for ``text``)."""
    param = "response_format"
    if not isinstance(fmt, dict):
        raise InvalidRequest("response_format must be an object with a type", param=param)
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ConstraintSpec("json_object", param=param)
    if kind != "json_schema":
        raise InvalidRequest(
            f"response_format type {kind!r} is not supported; use text, json_object or json_schema",
            param="response_format.type",
        )
    inner = fmt.get("json_schema")
    if not isinstance(inner, dict):
        raise InvalidRequest(
            "response_format json_schema needs a json_schema object", param="response_format.json_schema"
        )
    name = inner.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(
            "response_format json_schema needs a name", param="response_format.json_schema.name"
        )
    schema = inner.get("schema", {})
    strict = inner.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest("strict must be true or false", param="response_format.json_schema.strict")
    # OpenAI's default is not strict: JSON Schema's own defaults (other properties allowed).
    return ConstraintSpec("json_schema", _schema_text(schema, param), strict=bool(strict), param=param)


def tool_call_spec(
    tools: list[dict[str, Any]], name: str | None = None, parallel: bool = True
) -> ConstraintSpec:
    """A spec for "a JSON call of one of these functions" (``tool_choice`` ``required``), or of
    function ``name`` (a named choice). The output is ``{"name": "<function>", "arguments":
    {...}}`` with the arguments valid for that function's parameters; with ``parallel``, a JSON
    list of one or more such calls. ``tools`` are OpenAI tool objects (``{"type": "function",
    "function": {"name", "parameters"}}``)."""
    calls = []
    for tool in tools:
        fn = tool.get("function", tool)
        if name is not None and fn.get("name") != name:
            continue
        calls.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": fn.get("name")},
                    "arguments": fn.get("parameters") or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not calls:
        raise InvalidRequest(f"no function named {name!r} in tools", param="tool_choice")
    one: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = {"type": "array", "items": one, "minItems": 1} if parallel else one
    return ConstraintSpec("json_schema", _schema_text(schema, "tools"), strict=True, param="tool_choice")


async def constrain(model: Any, spec: ConstraintSpec | None, params: SamplingParams) -> SamplingParams:
    """``params`` with the spec compiled for ``model`` (in a worker thread: compiling a new schema
    takes milliseconds to seconds, and the engine's step thread must not wait for it)."""
    if spec is None:
        return params
    if not isinstance(model, Constrainable):
        raise InvalidRequest(
            f"the {getattr(model, 'name', 'loaded')} engine does not support structured output "
            f"({spec.param}); use the torch or openvino engine",
            param=spec.param,
        )
    compiled = await anyio.to_thread.run_sync(model.compile_constraint, spec)
    return dataclasses.replace(params, constraint=compiled)


def _given(name: str, value: Any) -> bool:
    if name == "response_format":
        return value is not None and not (isinstance(value, dict) and value.get("type") == "text")
    return value is not None


def _schema_text(schema: Any, param: str) -> str:
    if isinstance(schema, bool):  # true: anything; false: nothing (refused by the compiler)
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise InvalidRequest("the JSON schema must be an object", param=param)
    return json.dumps(schema, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _json_value(value: str, param: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise InvalidRequest(f"{param} is not valid JSON: {exc}", param=param) from exc


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param} must be a non-empty string", param=param)
    return value


def _bounded(spec: ConstraintSpec) -> None:
    size = len(spec.value.encode("utf-8"))
    if size > MAX_SPEC_BYTES:
        raise InvalidRequest(
            f"the {spec.kind} is {size} bytes; the limit is {MAX_SPEC_BYTES} bytes", param=spec.param
        )
