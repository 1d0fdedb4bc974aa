"""Vision chat without an engine: which snapshots are vision-chat models, how chat messages
with ``image_url`` parts become Hugging Face content lists, and the 400s on the request's own
faults (too many images, bad base64, unsupported fields, URLs not fetched)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from support.tool_models import function_tool

from hfd.client.errors import InvalidRequest
from hfd.daemon import vision_chat
from hfd.daemon.schema import ChatCompletionRequest, parse
from hfd.daemon.settings import Settings, with_overrides
from hfd.daemon.tasks import registry

VISION = {"model_type": "llava", "vision_config": {"model_type": "clip_vision_model"}}


@pytest.mark.parametrize(
    ("config", "files", "tag", "task"),
    [
        ({"architectures": ["LlavaForConditionalGeneration"], **VISION}, [], None, "vision-chat"),
        ({"architectures": ["Qwen2VLForConditionalGeneration"]}, [], None, "vision-chat"),
        ({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}, [], None, "vision-chat"),
        ({"architectures": ["Idefics3ForConditionalGeneration"]}, [], None, "vision-chat"),
        # Gemma 3 takes images only with a vision tower and its processor files.
        (
            {"architectures": ["Gemma3ForConditionalGeneration"], "vision_config": {}},
            ["preprocessor_config.json"],
            None,
            "vision-chat",
        ),
        ({"architectures": ["Gemma3ForConditionalGeneration"]}, [], None, "generate"),
        ({"architectures": ["SomeNewModel"]}, [], "image-text-to-text", "vision-chat"),
        ({"architectures": ["LlamaForCausalLM"]}, [], None, "generate"),
        (
            {"architectures": ["WhisperForConditionalGeneration"]},
            ["preprocessor_config.json"],
            None,
            "transcribe",
        ),
    ],
)
def test_detection(
    tmp_path: Path, config: dict[str, Any], files: list[str], tag: str | None, task: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in files:
        (tmp_path / name).write_text("{}")
    if tag:
        (tmp_path / "README.md").write_text(f"---\npipeline_tag: {tag}\n---\n")
    assert registry.detect_task(tmp_path) == task


def _png(width: int = 8, height: int = 8) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _req(*content: Any, **fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": list(content)}], **fields}  # fmt: skip
    return parse(ChatCompletionRequest, body)


def _image(url: str, detail: str | None = None) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **({"detail": detail} if detail else {})}}


def test_messages_become_content_lists_with_image_markers() -> None:
    req = _req({"type": "text", "text": "look:"}, _image("data:x", "low"), _image("data:y"))
    assert vision_chat.has_images(req)
    assert vision_chat.image_parts(req) == ["messages.1.content.1", "messages.1.content.2"]
    messages, images = vision_chat.hf_messages(req)
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look:"}, {"type": "image"}, {"type": "image"}],
        },
    ]
    assert images == [("data:x", "messages.1.content.1", "low"), ("data:y", "messages.1.content.2", None)]
    assert not vision_chat.has_images(parse(ChatCompletionRequest, {"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}))  # fmt: skip


def test_detail_must_be_openais() -> None:
    from hfd.client.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as err:
        _req(_image("data:x", "ultra"))
    assert (err.value.param or "").startswith("messages.1.content")


def test_bounds_and_decoding() -> None:
    settings = with_overrides(Settings(), image_max_per_request=2, image_max_pixels=10_000)
    ok = vision_chat.decode_images([(_png(), "messages.0.content.0", None)], settings)
    assert ok[0].size == (8, 8) and ok[0].mode == "RGB"
    low = vision_chat.decode_images(
        [(_png(90, 60), "p", "low")], with_overrides(settings, image_max_pixels=10**6)
    )
    assert low[0].size == (90, 60)  # already under 512 pixels a side
    with pytest.raises(InvalidRequest) as err:
        vision_chat.decode_images([(_png(), "p", None)] * 3, settings)
    assert err.value.param == "messages" and "3 images" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        vision_chat.decode_images([(_png(150, 100), "messages.1.content.0", None)], settings)
    assert err.value.param == "messages.1.content.0.image_url.url" and "pixels" in str(err.value)
    with pytest.raises(InvalidRequest) as err:  # beyond PIL's own bomb check (twice the limit)
        vision_chat.decode_images([(_png(300, 100), "messages.1.content.0", None)], settings)
    assert err.value.param == "messages.1.content.0.image_url.url" and "10000 pixels" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        vision_chat.decode_images([("data:image/png;base64,@@@", "messages.1.content.0", None)], settings)
    assert err.value.param == "messages.1.content.0.image_url.url"
    with pytest.raises(InvalidRequest) as err:
        vision_chat.decode_images([("http://127.0.0.1/a.png", "messages.1.content.0", None)], settings)
    assert "not fetched" in str(err.value)


def test_low_detail_shrinks_large_images() -> None:
    settings = with_overrides(Settings(), image_max_pixels=10**7)
    (image,) = vision_chat.decode_images([(_png(1024, 768), "p", "low")], settings)
    assert image.size == (512, 384)
    (image,) = vision_chat.decode_images([(_png(1024, 768), "p", "high")], settings)
    assert image.size == (1024, 768)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [function_tool("f", {"type": "object"})]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_unsupported_fields_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        vision_chat._refuse_unsupported(_req(_image("data:x"), **fields))
    assert err.value.param == param


def test_unknown_part_type_names_the_part() -> None:
    with pytest.raises(InvalidRequest) as err:
        vision_chat.hf_messages(_req({"type": "input_audio", "text": None}))
    assert err.value.param == "messages.1.content.0"


def test_memory_estimate_counts_the_vision_tower(tmp_path: Path) -> None:
    from hfd.daemon.models.memory import estimate_model

    text = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 512, "vocab_size": 1000}  # fmt: skip
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "text_config": text,
        "vision_config": vision,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    chat = estimate_model(tmp_path, "vision-chat", max_running=32)
    one_row = estimate_model(tmp_path, "generate", max_running=1)
    assert chat.kv_cache == one_row.kv_cache  # one request at a time, whatever max_running says
    patches = (32 // 8) ** 2
    assert chat.activations - one_row.activations == patches * (32 + 64) * 4 * 2 + 2 * patches * patches * 4
