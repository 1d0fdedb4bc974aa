"""Plain JSON: ``{"name": ..., "arguments": {...}}`` or an array of them, at the start of the
reply. What the constrained path (``tool_choice`` required or named) makes a model emit, and
what the system-prompt fallback asks for inside ``<tool_call>`` tags (see ``hermes``)."""

from hfd.daemon.tools.parsers.stream import Family

FAMILY = Family(name="json", bare="{[")
