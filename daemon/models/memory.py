"""What a model will cost in memory before it is loaded.

A model's estimate (``estimate_model``) has four parts; docs/models.md gives the formulas:

- weights: the parameters of the weight files the engines load, at the dtype they load them in
  (safetensors headers give exact parameter counts and stored dtypes without reading tensors);
- KV cache (generation): ``layers x kv_heads x head_dim x 2 (K and V) x bytes x max_running x
  context`` — the most a full batch of full-length sequences can hold;
  for a seq2seq model, its decoder's self-attention and cross-attention caches
  (``tasks.seq2seq.cache_bytes``); the encoder and decoder weights are both in the weight files;
- activations: the largest intermediate buffers of one batch (rough, see ``_activations``; a
  vision chat model adds its vision tower's, ``tasks.vision.tower_activations``);
- overhead: a fixed allowance for the tokenizer, engine structures and allocator slack.

What the loaded models may use of each device, and what they hold, is ``budgets``'.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hfd.backends import gguf
from hfd.daemon.tasks.seq2seq import TASK as SEQ2SEQ_TASK
from hfd.daemon.tasks.seq2seq import cache_bytes as seq2seq_cache_bytes
from hfd.daemon.tasks.vision import TASK as VISION_TASK
from hfd.daemon.tasks.vision import tower_activations

log = logging.getLogger(__name__)

RAM = "ram"
# Tokenizer, engine bookkeeping, allocator slack: measured at 10-40 MiB per model for the tiny
# and MiniLM models with torch on CPU; rounded up.
MODEL_OVERHEAD_BYTES = 48 * 1024 * 1024
# A generator whose engine runs in a process of its own (OpenVINO GenAI's pipeline) also pays
# for that process: Python, the OpenVINO runtime and its CPU plugin. Measured: 125-132 MiB of
# RSS for the engine process of a 1 MiB model; rounded up.
ENGINE_PROCESS_BYTES = 144 * 1024 * 1024
DEFAULT_RAM_SHARE = 0.75
DEFAULT_GPU_SHARE = 0.90

_DTYPE_BYTES: dict[str, float] = {
    # safetensors spellings
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    # torch / config spellings
    "float64": 8,
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "int8": 1,
    "int4": 0.5,
    "float8_e4m3fn": 1,
}
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
_MAX_HEADER = 100 * 1024 * 1024  # safetensors caps its header at 100 MB


def dtype_bytes(name: str | None, default: float = 4.0) -> float:
    if not name:
        return default
    return _DTYPE_BYTES.get(name, _DTYPE_BYTES.get(name.lower().removeprefix("torch."), default))


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.overhead

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


# ----------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class _Tensors:
    float_params: int  # elements of floating-point tensors (these follow the load dtype)
    float_bytes: int  # their bytes as stored
    other_bytes: int  # integer / packed (quantised) tensors: loaded as stored


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"header length {length} is implausible")
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header


def _scan_safetensors(files: Iterable[Path]) -> _Tensors | None:
    """Parameter counts from the headers; None when a header cannot be read (the file sizes
    are then the estimate, and the engine will say what is wrong with the file)."""
    float_params = float_bytes = other_bytes = 0
    for f in files:
        try:
            header = _safetensors_header(f)
        except (OSError, ValueError) as exc:
            log.debug("cannot read safetensors header", extra={"file": str(f), "error": str(exc)})
            return None
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            start, end = info.get("data_offsets", (0, 0))
            size = int(end) - int(start)
            if info.get("dtype") in _FLOAT_DTYPES:
                count = 1
                for dim in info.get("shape", ()):
                    count *= int(dim)
                float_params += count
                float_bytes += size
            else:
                other_bytes += size
    return _Tensors(float_params, float_bytes, other_bytes)


def weight_files(path: Path, gguf_file: str | None = None) -> list[Path]:
    """The weight files an engine loads from a snapshot: the GGUF file the model option
    ``gguf_file`` names (it is served, whatever else is there), else safetensors when there are
    any, else PyTorch ``.bin`` files, else an ONNX model, else an OpenVINO IR, else the GGUF model
    file (vision projectors beside it are not loaded by the text pipeline). Export sub-folders
    that some repositories ship (``onnx/``, ``openvino/``) are alternatives, not extra weights."""
    if gguf_file:
        return [f for f in gguf.gguf_files(path) if f.name == gguf_file]
    safetensors = sorted(
        p
        for p in path.rglob("*.safetensors")
        if not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if safetensors:
        return safetensors
    for pattern in ("pytorch_model*.bin", "*.onnx", "openvino_model.bin"):
        found = sorted(path.glob(pattern))
        if found:
            return found
    return gguf.model_files(path)


def weights_bytes(path: Path, load_dtype: str | None = None, gguf_file: str | None = None) -> int:
    """Bytes the weights take once loaded. Floating-point tensors are counted at ``load_dtype``
    (e.g. "float16", or an OpenVINO weight format "int8") when given, else as stored;
    ``gguf_file``: the GGUF file served (``weight_files``)."""
    files = weight_files(path, gguf_file)
    on_disk = sum(f.stat().st_size for f in files)
    if not files or files[0].suffix != ".safetensors":
        if load_dtype:
            # Without a header, assume float32 files; a rough but safe-side scaling.
            return int(on_disk * min(1.0, dtype_bytes(load_dtype) / 4.0))
        return on_disk
    tensors = _scan_safetensors(files)
    if tensors is None:
        return on_disk
    floats = tensors.float_bytes if not load_dtype else int(tensors.float_params * dtype_bytes(load_dtype))
    return floats + tensors.other_bytes


# ----------------------------------------------------------------------------- config


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # Multimodal configs keep the language model's numbers under text_config.
    text = data.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" not in data:
        return {**data, **text}
    return data


def _first_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def config_dtype(config: Mapping[str, Any]) -> str | None:
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def context_length(config: Mapping[str, Any]) -> int:
    return (
        _first_int(config, "max_position_embeddings", "n_positions", "seq_length", "max_sequence_length")
        or 2048
    )


def kv_cache_bytes(config: Mapping[str, Any], *, max_running: int, context: int, element_bytes: float) -> int:
    """layers x kv_heads x head_dim x 2 (K and V) x bytes x max_running x context."""
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers") or 0
    heads = _first_int(config, "num_attention_heads", "n_head", "num_heads") or 1
    kv_heads = (
        1
        if config.get("multi_query")
        else (_first_int(config, "num_key_value_heads", "num_kv_heads") or heads)
    )
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model") or 0
    head_dim = _first_int(config, "head_dim") or (hidden // heads if heads else 0)
    return int(layers * kv_heads * head_dim * 2 * element_bytes * max_running * context)


def _activations(
    config: Mapping[str, Any],
    task: str,
    *,
    element_bytes: float,
    batch_tokens: int,
    batch_rows: int,
    max_length: int,
) -> int:
    """The largest live buffers of one forward pass: two feed-forward intermediates over the
    batch's tokens, one sequence's attention scores (fused attention kernels work one block at a
    time), and (generation) one row of logits per sequence. For all-MiniLM-L6-v2 with torch on CPU
    at 16 x 512 tokens this gives 139 MiB; the measured peak was 141 MiB."""
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model") or 0
    inter = _first_int(config, "intermediate_size", "n_inner", "ffn_dim", "d_ff") or 4 * hidden
    heads = _first_int(config, "num_attention_heads", "n_head", "num_heads") or 1
    ffn = batch_tokens * (hidden + inter) * element_bytes * 2
    scores = heads * max_length * max_length * element_bytes
    logits = 0
    if task == "generate":
        vocab = _first_int(config, "vocab_size") or 0
        logits = batch_rows * vocab * 4  # logits are float32 for sampling
    return int(ffn + scores + logits)


def estimate_model(
    path: Path,
    task: str,
    *,
    load_dtype: str | None = None,
    max_running: int = 1,
    context_tokens: int = 0,
    max_batched_tokens: int = 4096,
    encoder_batch_tokens: int = 8192,
    encoder_max_batch: int = 32,
    gguf_file: str | None = None,
) -> MemoryEstimate:
    """What a model will use once loaded, before loading it (see the module docstring).

    ``context_tokens`` > 0 caps the per-sequence context assumed for the KV cache;
    ``gguf_file``: the model option naming the GGUF file served.
    """
    config = read_config(path)
    weights = weights_bytes(path, load_dtype, gguf_file)
    element = dtype_bytes(load_dtype or config_dtype(config), default=4.0)
    if element < 2:  # int8/int4 weight formats still compute and cache in 16/32-bit
        element = 4.0 if (load_dtype or "").lower() in ("int8", "int4") else 2.0
    context = context_length(config)
    if context_tokens > 0:
        context = min(context, context_tokens)
    if task == VISION_TASK:  # one request at a time, plus the vision tower's buffers
        return _vision_estimate(config, weights, element, context, max_batched_tokens)
    if task in ("generate", SEQ2SEQ_TASK):  # seq2seq: the decoder's and the cross-attention caches
        kv = (seq2seq_cache_bytes if task == SEQ2SEQ_TASK else kv_cache_bytes)(
            config, max_running=max_running, context=context, element_bytes=element
        )
        acts = _activations(
            config,
            "generate",
            element_bytes=element,
            batch_tokens=min(max_batched_tokens, max_running * context),
            batch_rows=max_running,
            max_length=min(context, max_batched_tokens),
        )
    else:
        kv = 0
        acts = _activations(
            config,
            task,
            element_bytes=element,
            batch_tokens=encoder_batch_tokens,
            batch_rows=encoder_max_batch,
            max_length=min(context, encoder_batch_tokens),
        )
    return MemoryEstimate(weights=weights, kv_cache=kv, activations=acts, overhead=MODEL_OVERHEAD_BYTES)


def _vision_estimate(
    config: Mapping[str, Any], weights: int, element: float, context: int, max_batched_tokens: int
) -> MemoryEstimate:
    """Vision chat (``hfd.daemon.tasks.vision``): the weights hold the vision tower's too; one
    sequence's KV cache and activations (requests run one at a time), and the tower's buffers."""
    kv = kv_cache_bytes(config, max_running=1, context=context, element_bytes=element)
    acts = _activations(config, "generate", element_bytes=element, batch_tokens=min(max_batched_tokens, context),
                        batch_rows=1, max_length=min(context, max_batched_tokens))  # fmt: skip
    acts += tower_activations(config.get("vision_config"), element)
    return MemoryEstimate(weights=weights, kv_cache=kv, activations=acts, overhead=MODEL_OVERHEAD_BYTES)
