"""A request body's validation failure as OpenAI reports it: 400 ``invalid_request_error``
with ``param``, the dotted path of the field (``messages.0.role``), and a message naming it.

OpenAI answers every body that fails validation with 400 (wrong type, missing field, value out
of range), never 422; ``hfd.client.errors.ValidationFailed`` has that status. pydantic's error
locations also name the member of a union a value was tried against (``content.str``,
``input.list[int]``): those are not fields and are dropped from ``param``, and the members'
complaints are joined into one message.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hfd.client.errors import ValidationFailed

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "tuple", "bytes", "literal"})
MAX_DETAILS = 10


def _is_tag(part: object) -> bool:
    """A location part that names a union member or validator, not a field or an index."""
    if not isinstance(part, str):
        return False
    return (
        part in _TYPE_TAGS
        or any(c in part for c in "[]-(")
        # A model's class name (a union of models); request fields are snake_case.
        or part[:1].isupper()
    )


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if not _is_tag(p))


def _reason(msg: str) -> str:
    text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return text[:1].lower() + text[1:]


def validation_failed(exc: ValidationError) -> ValidationFailed:
    errors = exc.errors()
    first = errors[0]
    param = field_path(first.get("loc", ()))
    name = param or "body"
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{name}'."
    else:
        # The members of a union the value matched none of: one message for the field.
        same = [e for e in errors if field_path(e.get("loc", ())) == param and e.get("type") != "missing"]
        reasons = list(dict.fromkeys(_reason(str(e.get("msg", "invalid value"))) for e in same))
        message = f"Invalid value for '{name}': " + " or ".join(reasons[:4]) + "."
    return ValidationFailed(
        message,
        param=param or None,
        details={
            "errors": [
                {"loc": list(e["loc"]), "param": field_path(e["loc"]), "msg": e["msg"]}
                for e in errors[:MAX_DETAILS]
            ]
        },
    )
