"""What a stored model is for, read from its config (shown by ``hfd show``)."""

from __future__ import annotations

import json
from pathlib import Path

_GENERATE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")


def guess_task(model_dir: Path) -> str | None:
    """``generate`` or ``embed`` from config.json's architectures; None when it cannot tell."""
    if (model_dir / "modules.json").is_file():  # a sentence-transformers model
        return "embed"
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    architectures = config.get("architectures") or []
    if any(str(a).endswith(_GENERATE_SUFFIXES) for a in architectures):
        return "generate"
    if any(str(a).endswith("Model") for a in architectures):
        return "embed"
    return None
