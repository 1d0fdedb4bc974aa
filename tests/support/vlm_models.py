"""Tiny random-weight vision-language chat models (LLaVA and Qwen2-VL), built on the spot.

Each folder holds what a real one on the Hub holds: ``config.json`` naming the
``*ForConditionalGeneration`` head, safetensors weights, a tokenizer with the family's image
tokens and a chat template that renders OpenAI-style content lists (``{"type": "image"}``
parts become the family's image marker), and ``preprocessor_config.json`` for the family's
PIL image processor (the default flavours need torchvision, which is never installed here).

LLaVA: a Llama text model over a CLIP vision tower (32x32 images, 8-pixel patches: 16 image
tokens). Qwen2-VL: its own text model and vision tower (14-pixel patches merged 2x2; images
resized to 56x56 at most, so at most 4 image tokens each). The weights are random, so replies
are garbage; tests compare them with transformers' own greedy ``generate`` token for token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.models import _bpe_tokenizer, _cached, _fields, _write_json, tiny_llama

TINY_LLAVA_VERSION = 2
TINY_QWEN2_VL_VERSION = 1

# One template for both families: a content list renders text parts as they are and image
# parts as ``image_marker`` (a string content is rendered as it is).
_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_MARKER{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _tokenizer(image_tokens: list[str]) -> Any:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_bpe_tokenizer(vocab_size=1024),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=512,
    )
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in image_tokens]})
    return tok


def _text_fields(tokenizer: Any) -> dict[str, Any]:
    """The tiny Llama's shape (``support.models.tiny_llama``), over this tokenizer."""
    base = json.loads((tiny_llama() / "config.json").read_text())
    shape = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "initializer_range")  # fmt: skip
    return {
        **{key: base[key] for key in shape},
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }


def _save(model: Any, tokenizer: Any, marker: str, out: Path) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.chat_template = _TEMPLATE.replace("IMAGE_MARKER", marker)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_tiny_llava(out: Path) -> None:
    import torch
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = _tokenizer(["<image>"])
    vision = _fields(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    config = LlavaConfig(
        text_config={"model_type": "llama", **_text_fields(tokenizer)},
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(2468)
    model: Any = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    _save(model, tokenizer, "<image>", out)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        out
    )
    # As llava-hf's folders have it: what LlavaProcessor needs to count the image tokens.
    _write_json(out / "processor_config.json", {"processor_class": "LlavaProcessor", "patch_size": 8,
                "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1})  # fmt: skip


def _build_tiny_qwen2_vl(out: Path) -> None:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    markers = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(markers)
    ids = tokenizer.convert_tokens_to_ids
    text = {**_text_fields(tokenizer), "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    vision = _fields(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, in_channels=3)  # fmt: skip
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(1357)
    model: Any = Qwen2VLForConditionalGeneration(config).to(torch.float32).eval()
    _save(model, tokenizer, "<|vision_start|><|image_pad|><|vision_end|>", out)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                          temporal_patch_size=2).save_pretrained(out)  # fmt: skip


def tiny_llava(path: Path | None = None) -> Path:
    """A random-weight LLaVA (64-wide Llama over a 32-wide CLIP tower, 16 image tokens)."""
    return _cached("tiny-llava", TINY_LLAVA_VERSION, _build_tiny_llava, path)


def tiny_qwen2_vl(path: Path | None = None) -> Path:
    """A random-weight Qwen2-VL (64-wide text model, 2-layer vision tower, <= 4 image tokens)."""
    return _cached("tiny-qwen2-vl", TINY_QWEN2_VL_VERSION, _build_tiny_qwen2_vl, path)


def oracle_generate(path: Path, images: list[bytes], text: str, max_new_tokens: int) -> list[int]:
    """transformers' own greedy ``generate`` for one user message (the images, then ``text``):
    the inputs built by transformers' processor (LLaVA) or by Qwen2-VL's image processor and
    its marker expansion, as ``Qwen2VLProcessor`` does; the new token ids."""
    import io

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    pils = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in images]
    hf = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]}]
    prompt = tok.apply_chat_template(hf, tokenize=False, add_generation_prompt=True)
    if json.loads((path / "config.json").read_text())["model_type"] == "qwen2_vl":
        from transformers import Qwen2VLImageProcessorPil

        pixels = Qwen2VLImageProcessorPil.from_pretrained(path)(images=pils, return_tensors="pt")
        for grid in pixels["image_grid_thw"]:
            prompt = prompt.replace("<|image_pad|>", "<|placeholder|>" * (int(grid.prod()) // 4), 1)
        prompt = prompt.replace("<|placeholder|>", "<|image_pad|>")
        inputs = {**tok([prompt], add_special_tokens=False, return_tensors="pt"), **pixels}
    else:
        from transformers import CLIPImageProcessorPil, LlavaProcessor

        proc = LlavaProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(path), tokenizer=tok,
                              patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
        inputs = dict(proc(images=pils, text=[prompt], add_special_tokens=False, return_tensors="pt"))
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids: list[int] = out[0, inputs["input_ids"].shape[1] :].tolist()
    return ids
