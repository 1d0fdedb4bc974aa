"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``), generated, not written.

It is read from the one table of operations (``hfd.daemon.operations``): each row's HTTP
routes become path items, its request type (pydantic, ``model_json_schema``) the request body,
its kind the success reply's media types (JSON; SSE for a streamed generation; NDJSON for a
progress stream), its scope the security requirement. Reply bodies are documented by
``hfd.daemon.openapi_models``; a row it does not know is documented as a JSON object, and a
kind it does not know with every media type the door streams, so a row added to the table is
in the document at once and the document never claims less than the door sends.

Errors are OpenAI's envelope (``ErrorBody``) at the statuses of ``hfd.client.errors`` that an
operation can answer with: every route can fail (500); a scoped one can refuse a caller (401,
403, 429); one with a body can refuse it (400, 408, 413, 422); one that names a model can find
none (404) or none that fits (503, 507). A row ``openapi_models`` does not know may imitate
another API (Ollama, Anthropic) with its own error shape: its errors are documented as objects,
its body (when it has no request type) as any object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hfd import __version__
from hfd.daemon import openapi_models as om
from hfd.daemon.operations import OPERATIONS, Operation

OPENAPI_VERSION: Final = "3.1.0"
_REF: Final = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")

JSON: Final = "application/json"
SSE: Final = "text/event-stream"
NDJSON: Final = "application/x-ndjson"

# Rows the door answers itself with something other than JSON.
_MEDIA: Final[dict[str, str]] = {"metrics": "text/plain", "web": "text/html", "web.static": "*/*"}

_STATUS_TEXT: Final[dict[int, str]] = {
    400: "Invalid request (invalid_request, invalid_json, context_length_exceeded, ...)",
    401: "No API key, or an invalid or revoked one, where keys are required (unauthorized)",
    403: "The key lacks the operation's scope or may not use the model (forbidden)",
    404: "No such model (model_not_found)",
    408: "The request body stalled (request_timeout)",
    413: "The request body is over http_max_body_bytes (payload_too_large)",
    422: "The body does not match the request type (validation_error)",
    429: "The key's rate limit (rate_limited) or the model's queue (overloaded) is full; see Retry-After",
    500: "A bug (internal_error): the daemon's log has the details",
    502: "No source could deliver the model (fetch_failed, verification_failed)",
    503: "The model cannot be served now (model_unavailable); see Retry-After",
    507: "Not enough memory (insufficient_memory) or disk (insufficient_storage)",
}


def _statuses(op: Operation, method: str) -> list[int]:
    codes = {500}
    if op.scope is not None:
        codes |= {401, 403, 429}
    if method != "GET":  # a body, parsed by the row's request type or by the route itself
        codes |= {400, 408, 413, 422}
        if op.request is None or "model" in op.request.model_fields:
            codes |= {404, 503, 507}
    if any("{" in path for _, path in op.http):
        codes |= {404}
    if op.kind == "progress":
        codes |= {502, 507}
    if op.name == "ready":
        codes |= {503}
    return sorted(codes)


def _reply(op: Operation) -> type[BaseModel]:
    return om.REPLIES.get(op.name, om.AnyObject)


def _success(op: Operation, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    if op.name in _MEDIA:
        media = _MEDIA[op.name]
        return {"description": "OK", "content": {media: {"schema": {"type": "string"}}}}
    body = {"schema": refs[_reply(op)]}
    content: dict[str, Any] = {JSON: body}
    item = om.STREAM_ITEMS.get(op.name, om.AnyObject)
    text = {"schema": {"type": "string"}, "x-item-schema": refs[item]}
    if op.kind == "generation" or op.name == "responses.create":  # its own SSE route
        content[SSE] = {**text, "description": "with stream: true, one data: event per chunk, then [DONE]"}
    elif op.kind == "progress":
        content[NDJSON] = {**text, "description": "with stream: true, one JSON line per event"}
    elif op.kind not in ("unary", "embedding"):
        content[SSE] = text  # a kind this module does not know: any stream the door sends
        content[NDJSON] = text
    return {"description": "OK", "content": content}


def _operation(
    op: Operation,
    method: str,
    path: str,
    index: int,
    refs: dict[type[BaseModel], dict[str, Any]],
    security: list[dict[str, list[str]]],
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.name if index == 0 else f"{op.name}.{index}",
        "tags": [_tag(path)],
        "summary": op.name,
        "description": _describe(op),
        "x-hfd-kind": op.kind,
        "security": [] if op.scope is None else security,
    }
    if op.scope is not None:
        doc["x-hfd-scope"] = op.scope
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PARAM.findall(path)
    ]
    if params:
        doc["parameters"] = params
    if method != "GET":
        # A row without a request type parses its body itself: documented as any object.
        body = refs[op.request] if op.request is not None else refs[om.AnyObject]
        doc["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    responses: dict[str, Any] = {"200": _success(op, refs)}
    # hfd's errors are OpenAI's envelope; a row this module does not know may answer in the
    # shape of the API it imitates (Ollama's {"error": "..."}, Anthropic's), so: an object.
    error = {"content": {JSON: {"schema": refs[om.ErrorBody if op.name in om.REPLIES else om.AnyObject]}}}
    for status in _statuses(op, method):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), **error}
    doc["responses"] = responses
    return doc


def _describe(op: Operation) -> str:
    parts = [f"Kind: {op.kind}."]
    parts.append("Open to anyone." if op.scope is None else f"Needs the {op.scope!r} scope.")
    if op.op is not None:
        parts.append(f"IPC op: {op.op}.")
    if op.client is not None:
        parts.append(f"hfd.client: Client.{op.client}().")
    return " ".join(parts)


def _tag(path: str) -> str:
    if path.startswith("/v1/"):
        return "OpenAI"
    if path.startswith("/api/"):
        return "hfd"
    return "daemon"


def document(
    operations: Iterable[Operation] = OPERATIONS,
    *,
    served: Callable[[Operation], bool] = lambda op: True,
    keys_required: bool = True,
) -> dict[str, Any]:
    """The OpenAPI document of ``operations`` (those ``served`` says the door serves).
    ``keys_required``: whether this daemon requires keys (else a key is optional: ``{}``)."""
    security: list[dict[str, list[str]]] = [{"bearer": []}] if keys_required else [{"bearer": []}, {}]
    rows = [op for op in operations if op.http and served(op)]
    types: list[type[BaseModel]] = [om.ErrorBody, om.AnyObject]
    for op in rows:
        types += [_reply(op), om.STREAM_ITEMS.get(op.name, om.AnyObject)]
        if op.request is not None:
            types.append(op.request)
    unique = list(dict.fromkeys(types))
    # One JSON Schema for every type: shared definitions appear once under components.
    keys, top = models_json_schema(
        [(t, "validation" if t in {op.request for op in rows} else "serialization") for t in unique],
        ref_template=_REF,
    )
    refs: dict[type[BaseModel], dict[str, Any]] = {
        t: keys[(t, m)] for t in unique for m in ("validation", "serialization") if (t, m) in keys
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in rows:
        for index, (method, template) in enumerate(op.http):
            path = _PARAM.sub(r"{\1}", template)
            paths.setdefault(path, {})[method.lower()] = _operation(op, method, path, index, refs, security)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "hfd",
            "version": __version__,
            "description": (
                "A per-machine model daemon: an OpenAI-compatible HTTP API and hfd's own admin routes. "
                "Generated from the daemon's table of operations (hfd.daemon.operations). Keys: "
                "'Authorization: Bearer hfd-...' where the daemon requires them (auth_required; by "
                "default only beyond loopback); each operation names the scope it needs (x-hfd-scope)."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an hfd API key (hfd keys create)",
                }
            },
        },
    }
