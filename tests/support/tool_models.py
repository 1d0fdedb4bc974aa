"""Tiny generation models whose chat templates render tools: the tiny Llama of
``support.models`` with a template of ``support.tool_templates`` and a longer context (a tools
system prompt is long; Llama's rotary positions need no table, so the same weights serve it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from support.models import CACHE_ROOT, TINY_CHAT_TEMPLATE, _cached, tiny_llama
from support.tool_templates import LLAMA31, MISTRAL, QWEN

# "plain": the tiny Llama's own template, which knows no tools (the fallback renders them).
TEMPLATES = {"qwen": QWEN, "llama31": LLAMA31, "mistral": MISTRAL, "plain": TINY_CHAT_TEMPLATE}
CONTEXT = 2048
VERSION = 1


def function_tool(name: str, parameters: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """A tool as OpenAI's chat completions take it (``{"type": "function", "function": ...}``)."""
    described = {"description": description} if description is not None else {}
    return {"type": "function", "function": {"name": name, **described, "parameters": parameters}}


def tool_llama(template: str = "qwen") -> Path:
    """The tiny Llama with the ``template`` chat template and a 2048-token context."""

    def build(out: Path) -> None:
        out.rmdir()
        shutil.copytree(tiny_llama(), out)
        (out / "chat_template.jinja").write_text(TEMPLATES[template])
        for name, key in (
            ("config.json", "max_position_embeddings"),
            ("tokenizer_config.json", "model_max_length"),
        ):
            data = json.loads((out / name).read_text())
            data[key] = CONTEXT
            (out / name).write_text(json.dumps(data, indent=2) + "\n")

    return _cached(f"tool-llama-{template}", VERSION, build, None)


__all__ = ["CACHE_ROOT", "tool_llama"]
