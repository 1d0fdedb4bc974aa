"""The vision chat task record: image-text-to-text models (LLaVA, Qwen2-VL / Qwen2.5-VL, Gemma 3
with a vision tower, Idefics3 / SmolVLM) answering chat messages with ``image_url`` parts.

Detected before ``generate`` (these heads are ``*ForConditionalGeneration`` too) from
config.json's ``architectures``, or a conditional-generation head with a ``vision_config`` and a
processor file (``preprocessor_config.json``...), or the card's ``pipeline_tag:
image-text-to-text``. Served by OpenVINO GenAI's VLMPipeline (``hfd.backends.vlm_openvino``)
or torch (``hfd.backends.vlm_torch``), ranked as generation engines (OpenVINO first on x86 CPUs;
``docs/engines.md`` has the first-token figures), on the media scheduler
(``hfd.daemon.media_worker``); the requests: ``hfd.daemon.vision_chat``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hfd.daemon.tasks.detect import Snapshot

TASK: Final = "vision-chat"
VISION_HEADS: Final = (
    "LlavaForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    "SmolVLMForConditionalGeneration",
)


def _vision_chat(s: Snapshot) -> bool:
    if s.has_head(*VISION_HEADS):
        return True
    # Gemma 3 (and other multimodal conditional-generation heads) take images only with a
    # vision tower; a text-only Gemma 3 checkpoint is plain generation.
    vision = isinstance(s.config.get("vision_config"), dict)
    return vision and s.has_head("ForConditionalGeneration") and bool(s.processor_files)


# The registry's record (``TaskRecord(**VISION_CHAT)``).
VISION_CHAT: Final[dict[str, Any]] = {
    "name": TASK,
    "summary": "chat with images (image_url parts): small vision-language models",
    "scheduler": "media",
    "engine_task": "generate",
    "engines": ("torch", "openvino"),
    "detect": _vision_chat,
    "pipeline_tags": ("image-text-to-text",),
    "loader": "load_vision_chat",
}

# Patches of one image assumed for a tower that does not say (Qwen2-VL resizes to its max_pixels).
DEFAULT_PATCHES: Final = 4096


def tower_activations(vision: Any, element_bytes: float) -> int:
    """The vision tower's largest buffers for one image (the model's memory estimate): two
    feed-forward intermediates over its patches and one head-set of attention scores."""
    if not isinstance(vision, dict):
        return 0

    def num(*keys: str) -> int:
        return next((v for k in keys if isinstance(v := vision.get(k), int) and v > 0), 0)

    hidden = num("hidden_size", "embed_dim")
    inter = num("intermediate_size") or int(vision.get("mlp_ratio", 4) * (num("embed_dim") or hidden))
    heads = num("num_attention_heads", "num_heads") or 1
    side, patch = num("image_size"), num("patch_size")
    patches = (side // patch) ** 2 if side and patch else DEFAULT_PATCHES
    return int(patches * (hidden + inter) * element_bytes * 2 + heads * patches * patches * element_bytes)
