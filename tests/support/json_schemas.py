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

SCHEMAS: list[dict[str, Any]] = [
    # 0: flat object, all required
    {
        "type": "object",
        "properties": {"name": _NAME, "age": _SMALL},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    # 1: booleans and null
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "none": {"type": "null"}},
        "required": ["ok", "none"],
        "additionalProperties": False,
    },
    # 2: string enum
    {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    },
    # 3: nested object
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"id": _SMALL, "nick": _NAME},
                "required": ["id", "nick"],
                "additionalProperties": False,
            }
        },
        "required": ["user"],
        "additionalProperties": False,
    },
    # 4: bounded array of integers
    {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": _SMALL, "minItems": 1, "maxItems": 4}},
        "required": ["xs"],
        "additionalProperties": False,
    },
    # 5: integer bounds, negative range
    {
        "type": "object",
        "properties": {"t": {"type": "integer", "minimum": -40, "maximum": 50}},
        "required": ["t"],
        "additionalProperties": False,
    },
    # 6: number with bounds
    {
        "type": "object",
        "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["p"],
        "additionalProperties": False,
    },
    # 7: string pattern
    {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    # 8: optional property (not required)
    {
        "type": "object",
        "properties": {"a": _SMALL, "b": _NAME},
        "required": ["a"],
        "additionalProperties": False,
    },
    # 9: array of objects
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": _NAME, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
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
    {
        "type": "object",
        "properties": {"version": {"const": 2}, "kind": {"const": "event"}},
        "required": ["version", "kind"],
        "additionalProperties": False,
    },
    # 12: anyOf union
    {
        "type": "object",
        "properties": {"v": {"anyOf": [_SMALL, {"type": "boolean"}]}},
        "required": ["v"],
        "additionalProperties": False,
    },
    # 13: $defs and $ref
    {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": _SMALL, "y": _SMALL},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
        "required": ["from", "to"],
        "additionalProperties": False,
    },
    # 14: nullable (type list)
    {
        "type": "object",
        "properties": {"note": {"type": ["string", "null"], "maxLength": 6}},
        "required": ["note"],
        "additionalProperties": False,
    },
    # 15: string format (date)
    {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"}},
        "required": ["day"],
        "additionalProperties": False,
    },
    # 16: exclusive bounds
    {
        "type": "object",
        "properties": {"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}},
        "required": ["n"],
        "additionalProperties": False,
    },
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
