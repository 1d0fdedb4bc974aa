"""Hermes / Qwen 2.5+ / Qwen 3: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one
block per call (the format Nous Research's Hermes 2 Pro introduced and Qwen's templates use)."""

from hfd.daemon.tools.parsers.stream import Family

FAMILY = Family(name="hermes", markers=("<tool_call>",), close="</tool_call>")
