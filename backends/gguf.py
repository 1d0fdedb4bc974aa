"""GGUF snapshots: a model directory whose weights are one ``*.gguf`` file (llama.cpp's format),
served by the OpenVINO engine, whose GenAI pipeline reads the file itself (docs/engines.md,
"GGUF files"). Tokenization stays with the snapshot's ``tokenizer.json``: GenAI's tokenizer
built from the GGUF's metadata splits text differently.

Nothing here imports openvino.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from hfd.backends.formats import SAFE_SUFFIXES
from hfd.client.errors import InvalidRequest

SUFFIX: Final = ".gguf"
WEIGHT_FORMAT: Final = "gguf"  # what hfd ps shows for a GGUF pipeline

# What the CPU plugin needs to compute a quantized GGUF (Q8_0) as transformers does on the
# dequantized file: an f32 KV cache and no dynamic quantization of activations.
CPU_PROPERTIES: Final[dict[str, Any]] = {"KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def weight_format(asked: str | None) -> str:
    """A GGUF file's weights are served as they are quantized in it: no other weight format."""
    if asked is not None and asked.lower() != WEIGHT_FORMAT:
        raise InvalidRequest(
            f"weight format {asked!r} does not apply to a GGUF snapshot, which is served with the "
            "weights of its .gguf file; pull another quantization with org/name:TAG",
            param="weight_format",
        )
    return WEIGHT_FORMAT


def gguf_files(path: Path) -> list[Path]:
    """The top-level ``*.gguf`` files of a model directory."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix == SUFFIX)


def gguf_only(path: Path) -> bool:
    """Whether the snapshot's weights are GGUF files alone (no safetensors to export from)."""
    return bool(gguf_files(path)) and not any(
        p.is_file() and p.suffix in SAFE_SUFFIXES for p in path.iterdir()
    )


def choose(path: Path, wanted: str | None) -> Path:
    """The GGUF file to serve: the one the model option ``gguf_file`` names, else the only one."""
    files = gguf_files(path)
    names = [f.name for f in files]
    if wanted:
        for file in files:
            if file.name == wanted:
                return file
        raise InvalidRequest(
            f"model option gguf_file={wanted!r} is not in the snapshot; it has {', '.join(names) or 'none'}",
            param="gguf_file",
        )
    if len(files) != 1:
        raise InvalidRequest(
            f"{path.name} has {len(files)} GGUF files ({', '.join(names)}): choose one with the model "
            "option gguf_file, or pull one with org/name:TAG",
            param="gguf_file",
            details={"files": names},
        )
    return files[0]


def properties(device: str, base: dict[str, Any]) -> dict[str, Any]:
    """The compile properties for a GGUF pipeline on ``device``: ``base`` plus the CPU's own."""
    return {**base, **CPU_PROPERTIES} if device.startswith("CPU") else dict(base)


def refusal(path: Path) -> str | None:
    """Why an engine that reads safetensors cannot load ``path``, when its weights are GGUF."""
    if not gguf_only(path):
        return None
    names = ", ".join(f.name for f in gguf_files(path))
    return (
        f"{path} holds GGUF weights only ({names}); this engine does not read GGUF, the openvino engine does"
    )
