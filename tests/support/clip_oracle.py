"""transformers' own CLIP / SigLIP vectors, the oracle every image-text engine is held to: the
model's ``get_text_features`` and ``get_image_features`` on inputs the oracle prepares itself
(its tokenizer, padded as the family pads; its PIL image processor)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def _vectors(out: Any) -> np.ndarray:
    # transformers returns the projected tensor, or (newer) an output whose pooler_output it is.
    return (out if hasattr(out, "detach") else out.pooler_output).numpy()


def text_features(model: Any, tokenizer: Any, kind: str, texts: list[str], max_length: int) -> np.ndarray:
    """``kind``: "clip" or "siglip" (padded to ``max_length``, with no attention mask, as SigLIP
    was trained)."""
    import torch

    padding = "max_length" if kind == "siglip" else True
    batch = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    if kind == "siglip":
        batch.pop("attention_mask", None)
    with torch.inference_mode():
        return _vectors(model.get_text_features(**batch))


def image_features(model: Any, kind: str, path: Path, raws: list[bytes]) -> np.ndarray:
    """The vectors of encoded images (PNG, JPEG ... bytes), through the family's PIL processor."""
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    pil = [Image.open(io.BytesIO(r)).convert("RGB") for r in raws]
    processor = (CLIPImageProcessorPil if kind == "clip" else SiglipImageProcessorPil).from_pretrained(path)
    with torch.inference_mode():
        return _vectors(
            model.get_image_features(pixel_values=processor(images=pil, return_tensors="pt")["pixel_values"])
        )
