"""Model directories for the fake engine, written in milliseconds with no torch or transformers.

A directory holds what task detection, the memory estimate and the store look at: a
``config.json`` of a real family and one small, valid ``model.safetensors`` (written by hand:
an 8-byte header length, a JSON header, the tensor bytes). The fake engine reads neither
weights nor tokenizer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

LLAMA_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
}
BERT_CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 1000,
    "max_position_embeddings": 128,
}


def write_safetensors(path: Path, name: str = "embed.weight", values: int = 16) -> None:
    """A valid safetensors file holding one float32 tensor of ``values`` zeros."""
    data = b"\0" * (4 * values)
    header = json.dumps({name: {"dtype": "F32", "shape": [values], "data_offsets": [0, len(data)]}})
    raw = header.encode() + b" " * (-len(header) % 8)  # the format pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def fake_model(root: Path, kind: str = "llama", name: str | None = None) -> Path:
    """A model directory under ``root``: ``kind`` "llama" (generate) or "bert" (embed)."""
    config = {"llama": LLAMA_CONFIG, "bert": BERT_CONFIG}[kind]
    path = root / (name or f"fake-{kind}")
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    write_safetensors(path / "model.safetensors")
    return path
