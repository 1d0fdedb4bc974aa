"""What a model directory is, in the terms of Ollama's ``details`` and ``model_info``: its
weight format, family, parameter count and weight type, read from ``config.json`` and the
safetensors headers (8 bytes and a JSON header per file: no weights are read).

Results are cached by directory and modification time: ``/api/ps`` and ``/api/tags`` ask for
every model each time, and the files of a snapshot do not change.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from hfd.daemon.store.task import guess_task

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on a header
_TYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "I8": "Q8_0", "U8": "Q8_0", "F64": "F64"}


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _safetensors_counts(path: Path) -> tuple[int, Counter[str]]:
    """(parameters, parameters per dtype) over the top-level ``*.safetensors`` files."""
    params = 0
    dtypes: Counter[str] = Counter()
    for file in sorted(path.glob("*.safetensors")):
        try:
            with file.open("rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                if length > _MAX_HEADER:
                    continue
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            n = 1
            for dim in entry.get("shape") or []:
                n *= int(dim)
            params += n
            dtypes[str(entry.get("dtype", ""))] += n
    return params, dtypes


def parameter_size(count: int) -> str:
    """Ollama's way of writing a parameter count: ``7.2B``, ``124M``, ``33K``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            value = count / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return str(count)


def _format(path: Path) -> str:
    for suffix, name in (
        (".safetensors", "safetensors"),
        (".gguf", "gguf"),
        (".onnx", "onnx"),
        (".bin", "pytorch"),
    ):
        if any(path.glob(f"*{suffix}")):
            return name
    return "safetensors"


@lru_cache(maxsize=256)
def _describe(path: Path, _mtime: float) -> dict[str, Any]:
    config = _config(path)
    family = str(config.get("model_type") or "")
    params, dtypes = _safetensors_counts(path)
    quant = _TYPES.get(dtypes.most_common(1)[0][0], dtypes.most_common(1)[0][0]) if dtypes else ""
    details = {
        "parent_model": "",
        "format": _format(path),
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size(params) if params else "",
        "quantization_level": quant,
    }
    info: dict[str, Any] = {"general.architecture": family, "general.parameter_count": params}
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        info["general.basename"] = str(architectures[0])
    for key, value in config.items():
        if isinstance(value, (int, float, str, bool)) and key != "model_type":
            info[f"{family or 'model'}.{key}"] = value
    context = config.get("max_position_embeddings") or config.get("n_positions")
    if isinstance(context, int):
        info[f"{family or 'model'}.context_length"] = context
    template = _chat_template(path)
    return {
        "details": details,
        "model_info": info,
        "template": template,
        "task": guess_task(path),
        "parameters": params,
    }


def _chat_template(path: Path) -> str:
    for name in ("chat_template.jinja",):
        try:
            return (path / name).read_text(encoding="utf-8")
        except OSError:
            pass
    try:
        data = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    template = data.get("chat_template") if isinstance(data, dict) else None
    if isinstance(template, list):  # named templates: the default one
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default":
                return str(entry.get("template") or "")
        return ""
    return template if isinstance(template, str) else ""


def describe(path: Path | str | None) -> dict[str, Any]:
    """``{"details", "model_info", "template", "task", "parameters"}`` of a model directory
    (empty details when it cannot be read)."""
    if path is None:
        return {"details": {}, "model_info": {}, "template": "", "task": None, "parameters": 0}
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return {"details": {}, "model_info": {}, "template": "", "task": None, "parameters": 0}
    return _describe(p, mtime)
