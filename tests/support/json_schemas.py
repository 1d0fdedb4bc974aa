"""Twenty JSON schemas for the structured-output guarantee tests and the benchmark.

They cover what apps send: flat and nested objects, arrays, enums, required and optional
properties, numbers with bounds, strings with patterns and formats, unions and references.
Every string, array and number is bounded, so that a random-weight model, which would happily
write one string forever, always reaches the end of the grammar within a few hundred tokens:
the tests then check that every finished output parses and validates.
"""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "minLength": 1, "maxLength": 8}
_SMALL = {"type": "integer", "minimum": 0, "maximum": 99}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """An object of these properties, ``required`` ones, and no others."""
    return dict(type="object", properties=properties, required=list(required), additionalProperties=False)


SCHEMAS: list[dict[str, Any]] = [
    # 0: flat object, all required
    _object({"name": _NAME, "age": _SMALL}, "name", "age"),
    # 1: booleans and null
    _object({"ok": {"type": "boolean"}, "none": {"type": "null"}}, "ok", "none"),
    # 2: string enum
    _object({"colour": {"enum": ["red", "green", "blue"]}}, "colour"),
    # 3: nested object
    _object({"user": _object({"id": _SMALL, "nick": _NAME}, "id", "nick")}, "user"),
    # 4: bounded array of integers
    _object({"xs": {"type": "array", "items": _SMALL, "minItems": 1, "maxItems": 4}}, "xs"),
    # 5: integer bounds, negative range
    _object({"t": {"type": "integer", "minimum": -40, "maximum": 50}}, "t"),
    # 6: number with bounds
    _object({"p": {"type": "number", "minimum": 0, "maximum": 1}}, "p"),
    # 7: string pattern
    _object({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}, "code"),
    # 8: optional property (not required)
    _object({"a": _SMALL, "b": _NAME}, "a"),
    # 9: array of objects
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": _object(
                    {"sku": _NAME, "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "sku", "qty"
                ),
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    },
    # 10: top-level array
    {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 2, "maxItems": 3},
    # 11: const
    _object({"version": {"const": 2}, "kind": {"const": "event"}}, "version", "kind"),
    # 12: anyOf union
    _object({"v": {"anyOf": [_SMALL, {"type": "boolean"}]}}, "v"),
    # 13: $defs and $ref
    {
        "$defs": {"point": _object({"x": _SMALL, "y": _SMALL}, "x", "y")},
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
        "required": ["from", "to"],
        "additionalProperties": False,
    },
    # 14: nullable (type list)
    _object({"note": {"type": ["string", "null"], "maxLength": 6}}, "note"),
    # 15: string format (date)
    _object({"day": {"type": "string", "format": "date"}}, "day"),
    # 16: exclusive bounds
    _object({"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}}, "n"),
    # 17: fixed-length tuple (prefixItems)
    {
        "type": "array",
        "prefixItems": [_SMALL, {"type": "boolean"}, {"enum": ["a", "b"]}],
        "items": False,
    },
    # 18: deeper nesting with an array inside
    {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-f0-9]{4}$"},
                    "tags": {"type": "array", "items": {"enum": ["new", "paid", "sent"]}, "maxItems": 3},
                    "total": {"type": "number", "minimum": 0, "maximum": 1000},
                },
                "required": ["id", "tags", "total"],
                "additionalProperties": False,
            }
        },
        "required": ["order"],
        "additionalProperties": False,
    },
    # 19: a plain enum of integers at the top level
    {"enum": [1, 2, 3, 5, 8]},
]

assert len(SCHEMAS) == 20
