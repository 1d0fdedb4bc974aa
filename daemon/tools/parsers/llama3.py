"""Llama 3.1 / 3.2 / 3.3 JSON tool calls: ``{"name": ..., "parameters": {...}}`` at the start of
the reply, optionally after ``<|python_tag|>``, several separated by ``;``. ``<|python_tag|>`` is
a special token that detokenising drops, so the bare JSON form is what usually arrives."""

from hfd.daemon.tools.parsers.stream import Family

FAMILY = Family(name="llama3", markers=("<|python_tag|>",), bare="{", separator=";")
