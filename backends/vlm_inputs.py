"""Vision chat prompts for the families whose processor class cannot be built here: the chat
template's image markers expanded to the tokens the vision tower yields, and the image tensors.

transformers' processor classes do this for LLaVA and Gemma 3 (``hfd.backends.vlm_torch``
builds them over the PIL image processor). Two families need it done here, as their processors
would do it:

- Qwen2-VL / Qwen2.5-VL: the processor class insists on a torchvision video processor. Each
  ``<|image_pad|>`` becomes ``grid_t * grid_h * grid_w / merge_size²`` of them.
- Idefics3 / SmolVLM: transformers 5.5 reads the word ``TorchvisionBackend`` in the docstrings
  of their PIL image processors' modules as a need for torchvision, so neither
  ``Idefics3ImageProcessorPil`` nor its processor class can be had from the top-level package;
  the PIL processor is imported from its own module. SmolVLM's processor class also wants a
  torchvision video processor and ``num2words`` (for video prompts only). Each ``<image>``
  becomes transformers' image prompt string: ``image_seq_len`` image tokens per tile, a
  ``<row_r_col_c>`` tag before each tile of a split image and the ``<global-img>`` tile last,
  each run wrapped in ``<fake_token_around_image>``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfd.backends import _hf
from hfd.client.errors import InvalidRequest, ModelUnavailable

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl")
IDEFICS_TYPES = ("idefics3", "smolvlm")
# Their image processors by ``image_processor_type``, and the family module holding the PIL one.
_IDEFICS_PROCESSORS = {"Idefics3ImageProcessor": "idefics3", "SmolVLMImageProcessor": "smolvlm"}

Tokenize = Callable[[str], dict[str, Any]]  # the prompt's text -> input_ids, attention_mask


def image_processor(path: Path, model_type: str) -> Any:
    """The model's image processor in its PIL flavour (the default ones need torchvision)."""
    from hfd.backends.clip_torch import image_processor as pil_processor

    if model_type not in IDEFICS_TYPES:
        return pil_processor(path)
    settings = _hf.read_json(path / "preprocessor_config.json")
    name = str(settings.get("image_processor_type") or "Idefics3ImageProcessor").removesuffix("Fast")
    family = _IDEFICS_PROCESSORS.get(name)
    if family is None:
        raise ModelUnavailable(f"unknown image processor {name!r} for a {model_type} model")
    module = importlib.import_module(f"transformers.models.{family}.image_processing_pil_{family}")
    return getattr(module, f"{name}Pil").from_pretrained(path, local_files_only=True)


def check_markers(text: str, marker: str, images: int) -> list[str]:
    """``text`` split at ``marker``, which the chat template placed once per image."""
    pieces = text.split(marker)
    if len(pieces) - 1 != images:
        raise InvalidRequest(
            f"the chat template placed {len(pieces) - 1} image markers for {images} images", param="messages"
        )
    return pieces


def qwen_inputs(text: str, images: list[Any], processor: Any, tokenize: Tokenize) -> dict[str, Any]:
    marker = "<|image_pad|>"
    pieces = check_markers(text, marker, len(images))
    tensors: dict[str, Any] = {}
    if images:
        pixels = processor(images=images, return_tensors="pt")
        merge = int(getattr(processor, "merge_size", 2)) ** 2
        counts = [int(grid.prod()) // merge for grid in pixels["image_grid_thw"]]
        text = pieces[0] + "".join(marker * n + rest for n, rest in zip(counts, pieces[1:], strict=True))
        tensors.update(pixels)
    tensors.update(tokenize(text))
    return tensors


@dataclass(frozen=True)
class IdeficsTokens:
    """The strings an Idefics3 / SmolVLM prompt wraps its images in, and tokens per tile."""

    image: str
    fake: str
    global_image: str
    seq_len: int


def idefics_tokens(path: Path, config: dict[str, Any], tokenizer: Any) -> IdeficsTokens:
    """As the processor classes take them: ``image_seq_len`` from ``processor_config.json``, else
    from the towers' shapes; SmolVLM's strings from its tokenizer, Idefics3's fixed."""
    settings = (
        _hf.read_json(path / "processor_config.json") if (path / "processor_config.json").is_file() else {}
    )
    seq_len = settings.get("image_seq_len")
    if not isinstance(seq_len, int):
        vision = config.get("vision_config") or {}
        side, patch = int(vision.get("image_size", 0) or 0), int(vision.get("patch_size", 0) or 0)
        scale = int(config.get("scale_factor", 2) or 2)
        if not side or not patch:
            raise ModelUnavailable("the model's vision_config gives no image_size and patch_size")
        seq_len = int((side // patch) ** 2 / scale**2)

    def token(name: str, default: str) -> str:
        return (
            str(getattr(tokenizer, name, None) or default)
            if config.get("model_type") == "smolvlm"
            else default
        )

    tokens = IdeficsTokens(image=token("image_token", "<image>"), fake=token("fake_image_token", "<fake_token_around_image>"),
                           global_image=token("global_image_token", "<global-img>"), seq_len=seq_len)  # fmt: skip
    if tokenizer.convert_tokens_to_ids(tokens.image) in (None, tokenizer.unk_token_id):
        raise ModelUnavailable(f"the model's tokenizer has no {tokens.image} token")
    return tokens


def idefics_inputs(text: str, images: list[Any], processor: Any, tokenize: Tokenize,
                   tokens: IdeficsTokens) -> dict[str, Any]:  # fmt: skip
    from transformers.models.idefics3.processing_idefics3 import get_image_prompt_string

    pieces = check_markers(text, tokens.image, len(images))
    tensors: dict[str, Any] = {}
    if images:
        pixels = dict(processor(images=[images], return_row_col_info=True, return_tensors="pt"))
        rows, cols = pixels.pop("rows")[0], pixels.pop("cols")[0]
        text = pieces[0] + "".join(
            get_image_prompt_string(r, c, tokens.seq_len, tokens.fake, tokens.image, tokens.global_image)
            + rest
            for r, c, rest in zip(rows, cols, pieces[1:], strict=True)
        )
        tensors.update(pixels)
    tensors.update(tokenize(text))
    return tensors
