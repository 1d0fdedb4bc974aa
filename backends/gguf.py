"""GGUF snapshots: a model directory whose weights are one ``*.gguf`` file (llama.cpp's format),
served by the OpenVINO engine, whose GenAI pipeline reads the file itself (docs/engines.md,
"GGUF files"). Tokenization stays with the snapshot's ``tokenizer.json``: GenAI's tokenizer
built from the GGUF's metadata splits text differently. A snapshot with no ``config.json`` or
no tokenizer files (most GGUF repositories ship the ``.gguf`` alone) is read from the file's
metadata as transformers reads it (``from_pretrained(dir, gguf_file=...)``: the config, and a
fast tokenizer converted from the GGUF vocabulary); its architecture comes from the ``gguf``
package (``architecture``), which is what task detection reads.

Nothing here imports openvino.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Final

from hfd.backends.formats import SAFE_SUFFIXES
from hfd.client.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)

SUFFIX: Final = ".gguf"
PROJECTOR: Final = "mmproj"  # the name prefix of a vision projector's GGUF, which is not a model
# The files a snapshot's own tokenizer is read from; without any, the GGUF's vocabulary is used.
TOKENIZER_FILES: Final = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# llama.cpp architectures that are not causal language models (encoders, vision projectors).
NOT_CAUSAL: Final = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "neo-bert", "modern-bert",
     "t5", "t5encoder", "clip", "wavtokenizer-dec"}
)  # fmt: skip
WEIGHT_FORMAT: Final = "gguf"  # what hfd ps shows for a GGUF pipeline

# What the CPU plugin needs to compute a quantized GGUF (Q8_0) as transformers does on the
# dequantized file: an f32 KV cache and no dynamic quantization of activations. The f32 KV cache
# only with f32 compute: with bf16 compute the plugin's paged attention refuses it ("expect
# kvcache type bf16", OpenVINO 2026.4), so there it keeps its own.
CPU_PROPERTIES: Final[dict[str, Any]] = {"KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
F32_ONLY: Final = frozenset({"KV_CACHE_PRECISION"})


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
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == SUFFIX)


def is_projector(name: str) -> bool:
    return name.lower().startswith(PROJECTOR)


def model_files(path: Path) -> list[Path]:
    """The top-level GGUF files of ``path`` that are models (not vision projectors)."""
    return [f for f in gguf_files(path) if not is_projector(f.name)]


def gguf_only(path: Path) -> bool:
    """Whether the snapshot's weights are GGUF files alone (no safetensors to export from)."""
    return bool(gguf_files(path)) and not any(
        p.is_file() and p.suffix in SAFE_SUFFIXES for p in path.iterdir()
    )


def serves_gguf(path: Path, wanted: str | None) -> bool:
    """Whether a generation model at ``path`` is served from a GGUF file: its weights are GGUF
    alone, or the model option ``gguf_file`` names one (also beside safetensors: the file the user
    named is served, never an export of the other weights; a name not there fails in ``choose``)."""
    return bool(wanted) or gguf_only(path)


def choose(path: Path, wanted: str | None) -> Path:
    """The GGUF file to serve: the one the model option ``gguf_file`` names, else the only model
    file (a vision projector beside it does not count)."""
    if wanted:
        files = gguf_files(path)
        for file in files:
            if file.name == wanted:
                return file
        names = [f.name for f in files]
        raise InvalidRequest(
            f"model option gguf_file={wanted!r} is not in the snapshot; it has {', '.join(names) or 'none'}",
            param="options.gguf_file",
        )
    files = model_files(path)
    names = [f.name for f in files]
    if len(files) != 1:
        raise InvalidRequest(
            f"{path.name} has {len(files)} GGUF files ({', '.join(names)}): choose one with the model "
            "option gguf_file, or pull one with org/name:TAG",
            param="options.gguf_file",
            details={"files": names},
        )
    return files[0]


def properties(device: str, base: dict[str, Any], precision: str) -> dict[str, Any]:
    """The compile properties for a GGUF pipeline on ``device``: ``base`` plus the CPU's own, for
    a CPU computing in ``precision`` ("f32", "bf16", "f16")."""
    if not device.startswith("CPU"):
        return dict(base)
    own = {k: v for k, v in CPU_PROPERTIES.items() if precision == "f32" or k not in F32_ONLY}
    return {**base, **own}


def refusal(path: Path) -> str | None:
    """Why an engine that reads safetensors cannot load ``path``, when its weights are GGUF."""
    if not gguf_only(path):
        return None
    names = ", ".join(f.name for f in gguf_files(path))
    return (
        f"{path} holds GGUF weights only ({names}); this engine does not read GGUF, the openvino engine does"
    )


def model_file(path: Path) -> Path | None:
    """The GGUF file whose metadata stands for a snapshot without config.json: the first
    top-level one that is not a vision projector."""
    files = model_files(path)
    return files[0] if files else None


def architecture(file: Path) -> str | None:
    """``general.architecture`` of a GGUF file, read with the ``gguf`` package; None when the
    package is missing or the file is not a readable GGUF."""
    try:
        stat = file.stat()
    except OSError:
        return None
    return _architecture(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _architecture(file: str, size: int, mtime_ns: int) -> str | None:
    try:
        from gguf import GGUFReader

        field = GGUFReader(file, "r").get_field("general.architecture")
        return str(field.contents()) if field is not None else None
    except Exception as exc:  # the package is missing, or the file is damaged or not a GGUF
        log.info("cannot read a GGUF file's architecture", extra={"file": file, "error": repr(exc)})
        return None


def causal(file: Path) -> bool:
    """Whether a GGUF file holds a causal language model (a text generation model)."""
    arch = architecture(file)
    return arch is not None and arch not in NOT_CAUSAL


def model_config(path: Path, served: Path) -> dict[str, Any]:
    """The snapshot's ``config.json``, else the config transformers reads from the GGUF's
    metadata (context length, layers, heads, vocabulary size, eos)."""
    from hfd.backends import _hf  # _hf imports this module

    if (path / "config.json").is_file():
        return _hf.require_model_dir(path)
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, gguf_file=served.name, local_files_only=True)
    except Exception as exc:
        raise ModelUnavailable(f"transformers cannot read the config of {served.name}: {exc}") from exc
    return dict(config.to_dict())


def tokenizer_file(path: Path, served: Path) -> str | None:
    """``gguf_file`` for the tokenizer: the served file when the snapshot has no tokenizer files."""
    return None if any((path / name).is_file() for name in TOKENIZER_FILES) else served.name
