"""Mistral (v3 tokenizer templates): ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.
``[TOOL_CALLS]`` is a control token that detokenising drops, so a JSON array at the start of the
reply is read as the calls too. The newer ``[TOOL_CALLS]name[ARGS]{...}`` form is not read."""

from hfd.daemon.tools.parsers.stream import Family

FAMILY = Family(name="mistral", markers=("[TOOL_CALLS]",), bare="[")
