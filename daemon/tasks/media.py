"""The speech-recognition (Whisper) and image-text embedding (CLIP, SigLIP) task records.

``transcribe`` runs on OpenVINO GenAI's WhisperPipeline or torch (ranked as generation engines:
OpenVINO first on CPUs); ``image-embed`` on ONNX Runtime, OpenVINO or torch (ranked as encoders:
the text and vision towers exported, ``hfd.backends.clip_graph``). Both are served by the one-at-a-time media
scheduler (``hfd.daemon.media_worker``). Their requests: ``hfd.daemon.transcribe`` and
``hfd.daemon.images``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hfd.daemon.tasks.detect import Snapshot

SPEECH_TYPES: Final = ("whisper",)
IMAGE_TEXT_TYPES: Final = ("clip", "siglip", "siglip2")


def _speech(s: Snapshot) -> bool:
    return s.config.get("model_type") in SPEECH_TYPES or s.has_head("WhisperForConditionalGeneration")


def _image_text(s: Snapshot) -> bool:
    return s.config.get("model_type") in IMAGE_TEXT_TYPES or s.has_head("CLIPModel", "SiglipModel")


def media_records(TaskRecord: Any) -> tuple[Any, ...]:
    """The records, made with the registry's ``TaskRecord`` (passed in: no import cycle)."""
    return (  # TaskRecord(name, summary, scheduler, engine_task, engines, detect, pipeline_tags, loader)
        TaskRecord("transcribe", "speech recognition and translation to English (Whisper)", "media", "generate",
                   ("openvino", "torch"), _speech, ("automatic-speech-recognition",), "load_speech"),
        TaskRecord("image-embed", "image and text embeddings in one space (CLIP, SigLIP)", "media", "embed",
                   ("onnxruntime", "openvino", "torch"), _image_text, ("zero-shot-image-classification",),
                   "load_image_text"),
    )  # fmt: skip
