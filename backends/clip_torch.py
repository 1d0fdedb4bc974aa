"""CLIP and SigLIP on torch: text and image embeddings in the model's one projected space
(``get_text_features`` / ``get_image_features``, the projection heads' outputs, not normalised:
the vectors are what transformers gives, so cosine similarity across the two kinds is the
model's own).

Images are pre-processed by the model's PIL image processor (``CLIPImageProcessorPil``...: the
default ones need torchvision, which is not installed); SigLIP's texts are padded to the model's length, as
it was trained. One call per request, on the model's worker thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hfd.backends import _hf
from hfd.backends.base import LoadOptions
from hfd.client.errors import InvalidRequest


class TorchImageText:
    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, device: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = device
        self.siglip = is_siglip(model.config)
        self.max_length = text_length(model.config)
        self.dimensions = projection_dimensions(model.config)

    def count_tokens(self, texts: list[str]) -> int:
        return count_tokens(self.tokenizer, texts, self.max_length)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = text_inputs(
            self.tokenizer, texts, siglip=self.siglip, max_length=self.max_length, tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in batch.items()})
        return _vectors(out)

    def embed_images(self, images: list[Any]) -> np.ndarray:
        import torch

        pixels = pixel_values(self.image_processor, images, tensors="pt")
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, dtype))
        return _vectors(out)

    def memory_bytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))

    def close(self) -> None:
        self.model = None


# -- pre-processing, the same for every engine (torch, ONNX Runtime, OpenVINO) ---------------------


def count_tokens(tokenizer: Any, texts: list[str], max_length: int) -> int:
    return sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length).input_ids)


def text_inputs(
    tokenizer: Any, texts: list[str], *, siglip: bool, max_length: int, tensors: str
) -> dict[str, Any]:
    """The text tower's inputs: CLIP's padded to the longest text with its attention mask;
    SigLIP's padded to the model's length with no mask, as it was trained."""
    padding = "max_length" if siglip else True
    batch = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors=tensors)
    inputs = {"input_ids": batch["input_ids"]}
    if "attention_mask" in batch and not siglip:
        inputs["attention_mask"] = batch["attention_mask"]
    return inputs


def pixel_values(image_processor: Any, images: list[Any], *, tensors: str) -> Any:
    """The vision tower's ``pixel_values`` from the model's own (PIL) image processor."""
    try:
        return image_processor(images=images, return_tensors=tensors)["pixel_values"]
    except Exception as exc:  # an image the processor cannot take (mode, size)
        raise InvalidRequest(f"the image cannot be processed: {exc}", param="input") from exc


def is_siglip(config: Any) -> bool:
    return "siglip" in str(getattr(config, "model_type", ""))


def text_length(config: Any) -> int:
    text_config = getattr(config, "text_config", None)
    return int(getattr(text_config, "max_position_embeddings", 77) or 77)


def projection_dimensions(config: Any) -> int:
    return int(getattr(config, "projection_dim", 0) or config.text_config.hidden_size)


def _vectors(out: Any) -> np.ndarray:
    tensor = out if hasattr(out, "detach") else out.pooler_output
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy(), dtype=np.float32)


def load(opts: LoadOptions) -> TorchImageText:
    from transformers import AutoModel, AutoTokenizer

    from hfd.backends.torch_backend import _from_pretrained, _prepare

    _hf.require_model_dir(opts.path)
    device, dtype = _prepare(opts)
    model = _from_pretrained(AutoModel, opts, device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(opts.path, local_files_only=True)
    processor = image_processor(opts.path)
    return TorchImageText(model, tokenizer, processor, device)


def image_processor(path: Any) -> Any:
    """The folder's image processor in its PIL flavour (``CLIPImageProcessorPil``...): in
    transformers 5 the default flavour needs torchvision, and AutoImageProcessor refuses
    without it even with ``use_fast=False``."""
    import json
    from pathlib import Path

    import transformers

    try:
        config = json.loads((Path(path) / "preprocessor_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest("the model has no readable preprocessor_config.json", param="model") from exc
    name = str(config.get("image_processor_type") or "CLIPImageProcessor").removesuffix("Fast")
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name, None)
    if cls is None:
        raise InvalidRequest(f"unknown image processor {name!r}", param="model")
    return cls.from_pretrained(path, local_files_only=True)
