"""Draft models for speculative decoding tests and measurements: a Llama cut to its first
layers (its embeddings, final norm, head and tokenizer kept), so it shares the model's
vocabulary, as a draft must. Cached like ``support.models``' builds."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.models import _cached, bench_llama, tiny_llama

DRAFT_VERSION = 1


def truncated_llama(source: Path, layers: int, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    for item in source.iterdir():  # tokenizer, chat template, generation config
        if item.is_file() and not item.name.endswith((".safetensors", ".bin")) and item.name != "config.json":
            shutil.copy2(item, out / item.name)


def tiny_llama_draft() -> Path:
    """The tiny Llama's first layer (of 2): a draft that agrees with it only some of the time."""
    return _cached("tiny-llama-draft", DRAFT_VERSION, lambda out: truncated_llama(tiny_llama(), 1, out), None)


def bench_llama_draft() -> Path:
    """The bench Llama's first 2 layers (of 8): a draft about a quarter of its cost per token."""
    return _cached(
        "bench-llama-draft", DRAFT_VERSION, lambda out: truncated_llama(bench_llama(), 2, out), None
    )
