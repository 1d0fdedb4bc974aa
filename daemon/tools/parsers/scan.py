"""Small incremental JSON scanning for tool-call parsers: where a JSON value that may still be
arriving ends, and whether the text so far can still be the head of a call object
(``{"name": "...", "arguments": {``), so a streamed call's name is sent as soon as it is known
and its arguments as they come."""

from __future__ import annotations

import json
from dataclasses import dataclass

WS = " \t\r\n"
INCOMPLETE = -1  # the value may still be arriving
INVALID = -2  # no JSON value can start here

# The keys a family writes a call's arguments under (Llama 3 writes "parameters").
ARGUMENT_KEYS = ("arguments", "parameters")


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in WS:
        i += 1
    return i


def value_end(text: str, i: int) -> int:
    """The end index of the JSON object, array or string starting at ``text[i]``;
    ``INCOMPLETE`` when the text stops inside it, ``INVALID`` when none starts there or its
    brackets do not match. Only structure is checked; ``json.loads`` validates the rest."""
    if i >= len(text):
        return INCOMPLETE
    if text[i] not in '{["':
        return INVALID
    stack: list[str] = []
    in_string = False
    escaped = False
    for j in range(i, len(text)):
        c = text[j]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
                if not stack:
                    return j + 1
        elif c == '"':
            in_string = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack.pop() != c:
                return INVALID
            if not stack:
                return j + 1
    return INCOMPLETE


@dataclass(frozen=True)
class Head:
    """The start of a call object in its usual order: its name and where its arguments object
    begins (``args`` points at that object's ``{``)."""

    name: str
    args: int


def _string(text: str, i: int) -> tuple[str, int] | int:
    """A JSON string at ``text[i]``: (value, end), or INCOMPLETE / INVALID."""
    end = value_end(text, i)
    if end < 0:
        return end
    if text[i] != '"':
        return INVALID
    try:
        return json.loads(text[i:end]), end
    except ValueError:
        return INVALID


def _literal(text: str, i: int, word: str) -> int:
    """End of ``word`` at ``text[i]``; INCOMPLETE if the text stops inside it, else INVALID."""
    piece = text[i : i + len(word)]
    if piece == word:
        return i + len(word)
    return INCOMPLETE if word.startswith(piece) and i + len(piece) == len(text) else INVALID


def call_head(text: str, i: int) -> Head | int:
    """Read ``{"name": "<name>", "arguments": {`` (or ``"parameters"``) at ``text[i]``, with
    any whitespace between. A ``Head``, or INCOMPLETE (it may still come), or INVALID (this
    object does not start that way; it may still be a call with its keys in another order)."""
    steps: list[str] = ["{", "name", ":", "name-value", ",", "key", ":", "args"]
    name = ""
    for step in steps:
        i = skip_ws(text, i)
        if i >= len(text):
            return INCOMPLETE
        if step in "{:,":
            if text[i] != step:
                return INVALID
            i += 1
        elif step == "name":
            end = _literal(text, i, '"name"')
            if end < 0:
                return end
            i = end
        elif step == "name-value":
            got = _string(text, i)
            if isinstance(got, int):
                return got
            name, i = got
        elif step == "key":
            ends = [_literal(text, i, f'"{key}"') for key in ARGUMENT_KEYS]
            if all(e == INVALID for e in ends):
                return INVALID
            found = [e for e in ends if e >= 0]
            if not found:
                return INCOMPLETE
            i = found[0]
        else:  # args: only an object streams as it comes
            return Head(name, i) if text[i] == "{" else INVALID
    return INVALID  # unreachable: the loop returns at "args"


def loose_call(text: str) -> tuple[str, str] | None:
    """A complete call object in any key order: (name, arguments as JSON text), or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return call_from_value(value)


def call_from_value(value: object) -> tuple[str, str] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    for key in ARGUMENT_KEYS:
        if key in value:
            args = value[key]
            if isinstance(args, str):
                # Some models write the arguments as a JSON string, as OpenAI sends them.
                try:
                    json.loads(args)
                except ValueError:
                    return None
                return value["name"], args
            if isinstance(args, dict):
                return value["name"], json.dumps(args, ensure_ascii=False)
            return None
    return value["name"], "{}"  # a call with no arguments
