"""Tiny random-weight vision-language chat models (LLaVA, Qwen2-VL, Idefics3, SmolVLM, Gemma 3),
built on the spot.

Each folder holds what a real one on the Hub holds: ``config.json`` naming the
``*ForConditionalGeneration`` head, safetensors weights, a tokenizer with the family's image
tokens and a chat template that renders OpenAI-style content lists (``{"type": "image"}``
parts become the family's image marker), and ``preprocessor_config.json`` for the family's
PIL image processor (the default flavours need torchvision, which is never installed here).

LLaVA: a Llama text model over a CLIP vision tower (32x32 images, 8-pixel patches: 16 image
tokens). Qwen2-VL: its own text model and vision tower (14-pixel patches merged 2x2; images
resized to 56x56 at most, so at most 4 image tokens each). Idefics3 and SmolVLM: a Llama text
model over their SigLIP-like tower (32x32 tiles, 8-pixel patches, pixel shuffle by 2: 4 image
tokens a tile); images are resized to 64 pixels on their longer side and split into 32x32 tiles
plus the whole image as a global tile, as the real ones split at 512 or 364. Gemma 3: its own
text model over a SigLIP tower (32x32 images, 4 image tokens). The weights are random, so
replies are garbage; tests compare them with transformers' own greedy ``generate`` token for
token.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from support.models import _bpe_tokenizer, _cached, _fields, _write_json, tiny_llama

TINY_LLAVA_VERSION = 2
TINY_QWEN2_VL_VERSION = 1
BENCH_LLAVA_VERSION = 1
TINY_IDEFICS3_VERSION = 1
TINY_SMOLVLM_VERSION = 1
TINY_GEMMA3_VL_VERSION = 1
# What Idefics3 / SmolVLM prompts wrap their image tiles in.
_IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>",
                   *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))]  # fmt: skip
_GEMMA3_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}

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


def _tokenizer(image_tokens: list[str], **extra: Any) -> Any:
    """The tests' BPE tokenizer with these image tokens (``extra``: named special tokens, as
    Gemma 3's ``boi_token``...)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_bpe_tokenizer(vocab_size=1024),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=512,
        **({"extra_special_tokens": extra} if extra else {}),
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


def _build_llava(out: Path, *, width: int = 32, side: int = 32, patch: int = 8, layers: int = 2,
                 text: dict[str, Any] | None = None, seed: int = 2468) -> None:  # fmt: skip
    """A LLaVA over a CLIP tower ``width`` wide, ``side``-pixel images in ``patch``-pixel patches;
    the text model is the tiny Llama's shape unless ``text`` overrides fields of it."""
    import torch
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = _tokenizer(["<image>"])
    vision = _fields(
        model_type="clip_vision_model",
        hidden_size=width,
        intermediate_size=2 * width if text is None else 4 * width,
        num_hidden_layers=layers,
        num_attention_heads=2 if text is None else width // 64,
        image_size=side,
        patch_size=patch,
        projection_dim=width,
    )
    config = LlavaConfig(
        text_config={"model_type": "llama", **_text_fields(tokenizer), **(text or {})},
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(side // patch) ** 2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model: Any = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    _save(model, tokenizer, "<image>", out)
    crop = {"height": side, "width": side}
    CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size=crop).save_pretrained(out)
    # As llava-hf's folders have it: what LlavaProcessor needs to count the image tokens.
    _write_json(out / "processor_config.json", {"processor_class": "LlavaProcessor", "patch_size": patch,
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


def _build_idefics(out: Path, model_type: str) -> None:
    import torch
    import transformers

    tokenizer = _tokenizer(_IDEFICS_TOKENS)
    prefix = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[model_type]
    vision = _fields(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                     patch_size=8)  # fmt: skip
    config = getattr(transformers, f"{prefix}Config")(
        text_config={"model_type": "llama", **_text_fields(tokenizer)},
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(3579 if model_type == "idefics3" else 4680)
    model: Any = getattr(transformers, f"{prefix}ForConditionalGeneration")(config).to(torch.float32).eval()
    _save(model, tokenizer, "<image>", out)
    # The PIL processor's module, imported directly: transformers 5.5 lists it as needing torchvision.
    module = __import__(f"transformers.models.{model_type}.image_processing_pil_{model_type}", fromlist=["_"])
    processor = getattr(module, f"{prefix}ImageProcessorPil")(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    processor.save_pretrained(out)
    _write_json(out / "processor_config.json", {"processor_class": f"{prefix}Processor", "image_seq_len": 4})


def _build_tiny_gemma3(out: Path) -> None:
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil

    tokenizer = _tokenizer(list(_GEMMA3_TOKENS.values()), **_GEMMA3_TOKENS)
    ids = tokenizer.convert_tokens_to_ids
    fields = _text_fields(tokenizer)
    text = {**fields, "num_key_value_heads": 2, "head_dim": fields["hidden_size"] // fields["num_attention_heads"],
            "query_pre_attn_scalar": 16, "sliding_window": 16}  # fmt: skip
    vision = _fields(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                     patch_size=8, vision_use_head=False)  # fmt: skip
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=ids(_GEMMA3_TOKENS["boi_token"]),
        eoi_token_index=ids(_GEMMA3_TOKENS["eoi_token"]),
        image_token_index=ids(_GEMMA3_TOKENS["image_token"]),
        tie_word_embeddings=False,
    )
    torch.manual_seed(5791)
    model: Any = Gemma3ForConditionalGeneration(config).to(torch.float32).eval()
    _save(model, tokenizer, _GEMMA3_TOKENS["boi_token"], out)
    Gemma3ImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)
    _write_json(out / "processor_config.json", {"processor_class": "Gemma3Processor", "image_seq_length": 4})


def tiny_llava(path: Path | None = None) -> Path:
    """A random-weight LLaVA (64-wide Llama over a 32-wide CLIP tower, 16 image tokens)."""
    return _cached("tiny-llava", TINY_LLAVA_VERSION, _build_llava, path)


def bench_llava(path: Path | None = None) -> Path:
    """A random-weight LLaVA of a benchmark's size: the 56M-parameter Llama of the engine
    measurements (hidden 512, 8 layers, 8 heads, 4 KV heads, FFN 1408) over a 4-layer CLIP tower
    256 wide, 224-pixel images in 14-pixel patches (256 image tokens)."""
    text = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
            "num_key_value_heads": 4, "max_position_embeddings": 2048}  # fmt: skip
    build = functools.partial(_build_llava, width=256, side=224, patch=14, layers=4, text=text, seed=1234)
    return _cached("bench-llava", BENCH_LLAVA_VERSION, build, path)


def tiny_qwen2_vl(path: Path | None = None) -> Path:
    """A random-weight Qwen2-VL (64-wide text model, 2-layer vision tower, <= 4 image tokens)."""
    return _cached("tiny-qwen2-vl", TINY_QWEN2_VL_VERSION, _build_tiny_qwen2_vl, path)


def tiny_idefics3(path: Path | None = None) -> Path:
    """A random-weight Idefics3 (64-wide Llama over a 2-layer tower; 4 image tokens per tile)."""
    return _cached(
        "tiny-idefics3", TINY_IDEFICS3_VERSION, functools.partial(_build_idefics, model_type="idefics3"), path
    )


def tiny_smolvlm(path: Path | None = None) -> Path:
    """A random-weight SmolVLM (Idefics3's shape under SmolVLM's classes)."""
    return _cached(
        "tiny-smolvlm", TINY_SMOLVLM_VERSION, functools.partial(_build_idefics, model_type="smolvlm"), path
    )


def tiny_gemma3_vl(path: Path | None = None) -> Path:
    """A random-weight Gemma 3 with a vision tower (64-wide text model, 4 image tokens)."""
    return _cached("tiny-gemma3-vl", TINY_GEMMA3_VL_VERSION, _build_tiny_gemma3, path)


def tiny_models() -> dict[str, Any]:
    """Each family's builder, by the name tests give it."""
    return {"llava": tiny_llava, "qwen2-vl": tiny_qwen2_vl, "idefics3": tiny_idefics3, "smolvlm": tiny_smolvlm,
            "gemma3": tiny_gemma3_vl}  # fmt: skip


def oracle_generate(path: Path, images: list[bytes], text: str, max_new_tokens: int) -> list[int]:
    """transformers' own greedy ``generate`` for one user message (the images, then ``text``) on
    the inputs of ``oracle_inputs``; the new token ids."""
    import torch
    from transformers import AutoModelForImageTextToText

    inputs = oracle_inputs(path, images, text)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids: list[int] = out[0, inputs["input_ids"].shape[1] :].tolist()
    return ids


def oracle_inputs(path: Path, images: list[bytes], text: str) -> dict[str, Any]:
    """The model inputs for one user message as transformers builds them: its processor class
    over the PIL image processor (LLaVA, Gemma 3, Idefics3), or, where that class needs
    torchvision, the family's image processor and its marker expansion written out as the class
    does it (Qwen2-VL: ``grid / merge²`` pads; SmolVLM: Idefics3's tile strings)."""
    import io

    from PIL import Image
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    pils = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in images]
    hf = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]}]
    prompt = tok.apply_chat_template(hf, tokenize=False, add_generation_prompt=True)
    model_type = json.loads((path / "config.json").read_text())["model_type"]
    if model_type == "qwen2_vl":
        from transformers import Qwen2VLImageProcessorPil

        pixels = Qwen2VLImageProcessorPil.from_pretrained(path)(images=pils, return_tensors="pt")
        for grid in pixels["image_grid_thw"]:
            prompt = prompt.replace("<|image_pad|>", "<|placeholder|>" * (int(grid.prod()) // 4), 1)
        prompt = prompt.replace("<|placeholder|>", "<|image_pad|>")
        return {**tok([prompt], add_special_tokens=False, return_tensors="pt"), **pixels}
    if model_type == "smolvlm":
        return _smolvlm_inputs(path, tok, pils, prompt)
    proc = _processor(path, model_type, tok)
    return dict(proc(images=pils or None, text=[prompt], add_special_tokens=False, return_tensors="pt"))


def _processor(path: Path, model_type: str, tok: Any) -> Any:
    if model_type == "llava":
        from transformers import CLIPImageProcessorPil, LlavaProcessor

        return LlavaProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(path), tokenizer=tok, patch_size=8,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
    if model_type == "gemma3":
        from transformers import Gemma3ImageProcessorPil, Gemma3Processor

        return Gemma3Processor(image_processor=Gemma3ImageProcessorPil.from_pretrained(path), tokenizer=tok,
                               image_seq_length=4)  # fmt: skip
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    return Idefics3Processor(image_processor=Idefics3ImageProcessorPil.from_pretrained(path), tokenizer=tok,
                             image_seq_len=4)  # fmt: skip


def _smolvlm_inputs(path: Path, tok: Any, pils: list[Any], prompt: str) -> dict[str, Any]:
    """SmolVLMProcessor's image prompt, written out: per image, each tile's
    ``<fake_token_around_image><row_r_col_c>`` and 4 ``<image>``, a newline after each row, then
    ``\n<fake_token_around_image><global-img>``, 4 ``<image>`` and ``<fake_token_around_image>``
    (an unsplit image: only the global part, without the leading newline)."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    inputs: dict[str, Any] = {}
    if pils:
        pixels = dict(SmolVLMImageProcessorPil.from_pretrained(path)(images=[pils], return_row_col_info=True,
                                                                     return_tensors="pt"))  # fmt: skip
        rows, cols = pixels.pop("rows")[0], pixels.pop("cols")[0]
        fake, tokens = "<fake_token_around_image>", "<image>" * 4
        pieces = prompt.split("<image>")
        prompt = pieces[0]
        for n_rows, n_cols, rest in zip(rows, cols, pieces[1:], strict=True):
            tiles = "".join(
                "".join(f"{fake}<row_{r + 1}_col_{c + 1}>{tokens}" for c in range(n_cols)) + "\n"
                for r in range(n_rows)
            )
            glob = f"{fake}<global-img>{tokens}{fake}"
            prompt += (f"{tiles}\n{glob}" if n_rows or n_cols else glob) + rest
        inputs.update(pixels)
    return {**inputs, **tok([prompt], add_special_tokens=False, return_tensors="pt")}
