"""Tool-call parsers, one module per family, in one registry keyed by name (the names the
``[[models]] tool_parser`` setting takes)."""

from __future__ import annotations

from hfd.client.errors import InvalidRequest
from hfd.daemon.tools.parsers import hermes, json_calls, llama3, mistral
from hfd.daemon.tools.parsers.stream import CallStream, Family, Parsed, ToolCall, parse

PARSERS: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in (hermes, llama3, mistral, json_calls)}


def family(name: str) -> Family:
    try:
        return PARSERS[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown tool parser {name!r}; known: {', '.join(sorted(PARSERS))}", param="tool_parser"
        ) from None


__all__ = ["PARSERS", "CallStream", "Family", "Parsed", "ToolCall", "family", "parse"]
