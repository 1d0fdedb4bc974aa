"""Tiny vision chat models for the OpenVINO engine's tests.

``tiny_llava_hf``: the tests' random-weight tiny LLaVA (``support.vlm_models.tiny_llava``) with
the chat template llava-hf's folders ship: each image part renders as ``<image>`` and a newline,
LLaVA's prompt format. OpenVINO GenAI writes that newline after each image itself, so the engine
serves a template that has it and refuses one that does not (``backends/vlm_openvino``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from support.models import _cached
from support.vlm_models import tiny_llava

TINY_LLAVA_HF_VERSION = 1


def _build_tiny_llava_hf(out: Path) -> None:
    source = tiny_llava()
    for item in source.iterdir():
        if item.is_file():
            shutil.copyfile(item, out / item.name)
    template = (out / "chat_template.jinja").read_text()
    assert template.count("<image>") == 1, "the tiny LLaVA's template renders one marker per image part"
    (out / "chat_template.jinja").write_text(template.replace("<image>", "<image>\n"))


def tiny_llava_hf(path: Path | None = None) -> Path:
    """The tiny LLaVA with llava-hf's ``<image>\\n`` per image part in its chat template."""
    return _cached("tiny-llava-hf", TINY_LLAVA_HF_VERSION, _build_tiny_llava_hf, path)
