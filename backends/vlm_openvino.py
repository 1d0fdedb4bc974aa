"""Vision-language chat on OpenVINO GenAI's ``VLMPipeline`` (LLaVA, Qwen2-VL, ... as optimum-intel
exports them with its ``image-text-to-text`` task).

The snapshot is exported through the OpenVINO engine's export path (``openvino_export``: the same
export cache, weight formats, pickle and family checks); a folder that already holds
``openvino_language_model.xml`` is used as it is. The prompt is built as the torch engine builds
it (``vlm_torch.TorchVisionChat.prepare``: the model's chat template, its processor), so the
prompt ids and their count are the torch engine's; GenAI gets the template's text (with the
family's own image marker, which GenAI expands itself) and the images as RGB pixels, and its
streamer hands back token ids, which hfd detokenizes with the snapshot's tokenizer, as for every
engine. Greedy tokens equal transformers' ``generate`` on the tiny test models
(``tests/integration/test_vision_openvino.py``).

The pipeline runs in a child process unless the model option ``pipeline_process`` is false
(``vlm_openvino_process``): a native crash must not take the daemon down. One request at a time
per model, on the media scheduler, as on torch; GenAI 2026.4's ``ContinuousBatchingPipeline``
also takes images (``add_request(id, prompt, images, config)``), which would batch concurrent
requests, but the media scheduler serves one at a time. CPU threads and precision follow the
OpenVINO engine's one rule (``openvino_backend._compile_properties``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from hfd.backends import _hf
from hfd.backends.base import FinishReason, LoadOptions, SamplingParams
from hfd.backends.vlm_batch import VisionRow, min_new_tokens
from hfd.backends.vlm_openvino_process import LocalVision, VisionProcess
from hfd.backends.vlm_torch import TorchVisionChat, VisionPrompt
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

# What GenAI's inputs embedder writes after each image's tokens itself, per family, and the
# family's image marker: LLaVA's prompt format is ``<image>\n`` and GenAI adds the newline
# whatever the prompt says (measured on the tiny LLaVA: its greedy tokens equal transformers' on
# the prompt with a newline after each marker). The engine removes the template's own newline
# there, so GenAI runs the template's prompt; a template without it is refused (torch serves).
_AFTER_IMAGE: dict[str, tuple[str, str]] = {"llava": ("<image>", "\n")}
# Families whose greedy replies on GenAI were checked equal to transformers' here
# (tests/integration/test_vision_openvino.py). Another family is refused before its export, and
# torch, whose replies are checked for every family served, serves it: GenAI's inputs embedder
# differs per family (see _AFTER_IMAGE), so an unchecked one could answer a different prompt.
CHECKED_FAMILIES: frozenset[str] = frozenset({"llava"})


class OpenVINOVisionChat:
    """GenAI's pipeline behind the torch engine's prompt building (``render``, ``prepare``,
    ``decode`` of a ``TorchVisionChat`` with no weights); ``generate`` as the torch engine's."""

    name = "openvino"
    # Nothing beyond plain sampling (greedy, temperature, top_p, seed, min_tokens, stop strings).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, runner: LocalVision | VisionProcess, folder: Path, prompts: TorchVisionChat) -> None:
        self.runner = runner
        self.folder = folder
        self.prompts = prompts
        self.model_type = prompts.model_type
        self.context_length = prompts.context_length
        self.eos_token_ids = prompts.eos_token_ids
        self.weight_format: str | None = None
        self.precision: str | None = None
        self.threads = 0

    @property
    def alive(self) -> bool:
        return bool(self.runner.alive)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.prompts.decode(token_ids)

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        return self.prompts.render(messages)

    def prepare(self, messages: Sequence[dict[str, Any]], images: Sequence[Any]) -> VisionPrompt:
        ids = self.prompts.prepare(messages, images).ids  # the processor's ids: the torch engine's prompt
        pixels = [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images]
        return VisionPrompt(ids=ids, tensors={"text": genai_text(self.render(messages), self.model_type),
                                              "images": pixels})  # fmt: skip

    def generate(self, prompt: VisionPrompt, params: SamplingParams, emit: Callable[[list[int]], None],
                 stop: threading.Event) -> FinishReason:  # fmt: skip
        row = VisionRow(prompt, params, emit, stop)

        def on_tokens(ids: list[int]) -> None:
            row.produced += len(ids)
            emit(ids)

        self.runner.generate(prompt.tensors["text"], prompt.tensors["images"], self.config(params), on_tokens,
                             stop.is_set)  # fmt: skip
        return row.finish()

    def config(self, params: SamplingParams) -> dict[str, Any]:
        """GenAI ``GenerationConfig`` fields for ``params`` (the prompt is rendered already)."""
        fields: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "min_new_tokens": min_new_tokens(params),
            "do_sample": not params.greedy,
            "apply_chat_template": False,
            "stop_token_ids": sorted(self.eos_token_ids),
        }
        if not params.greedy:
            fields.update(temperature=float(params.temperature), top_p=float(params.top_p), top_k=0)
            if params.seed is not None:
                fields["rng_seed"] = int(params.seed)
        return fields

    def memory_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("openvino_*.bin"))

    def close(self) -> None:
        self.runner.close()


def load(opts: LoadOptions) -> OpenVINOVisionChat:
    from hfd.backends.openvino_backend import _compile_properties, ov_device
    from hfd.backends.openvino_export import prepare_ir, resolve_weight_format

    config = _hf.require_model_dir(opts.path)
    device = ov_device(opts.device)
    if device.startswith("NPU"):
        raise ModelUnavailable("OpenVINO's VLMPipeline does not run on the NPU; use CPU or GPU")
    start = time.perf_counter()
    weight_format = resolve_weight_format(opts, device)
    prompts = _prompts(opts, config)
    check_template(prompts)  # before the export: a refused model is not exported for nothing
    folder, built = prepare_ir(opts, opts.task, weight_format)  # a ready IR folder: itself
    properties = _compile_properties(opts, device)
    init = {"folder": str(folder), "device": device, "properties": properties,
            "bos": str(getattr(prompts.tokenizer, "bos_token", None) or "")}  # fmt: skip
    runner = VisionProcess(init) if opts.flag("pipeline_process", True) else _local(init)
    vlm = OpenVINOVisionChat(runner, folder, prompts)
    vlm.weight_format = weight_format
    vlm.precision = str(properties.get("INFERENCE_PRECISION_HINT") or "") or None
    vlm.threads = int(properties.get("INFERENCE_NUM_THREADS", 0))
    log.info("vision chat model loaded", extra={
        "engine": "openvino", "model_path": str(opts.path), "device": device, "weight_format": weight_format,
        "precision": vlm.precision, "threads": vlm.threads, "exported": built, "model_type": vlm.model_type,
        "own_process": isinstance(runner, VisionProcess), "seconds": round(time.perf_counter() - start, 3)})  # fmt: skip
    return vlm


def genai_text(text: str, model_type: str) -> str:
    """The template's ``text`` as GenAI must be given it to run that prompt (see ``_AFTER_IMAGE``)."""
    marker, after = _AFTER_IMAGE.get(model_type, ("", ""))
    return text.replace(marker + after, marker) if marker else text


def check_family(model_type: str | None) -> None:
    """Refuse a family whose replies on GenAI are not checked here (``CHECKED_FAMILIES``): called
    before any export of it, at load and at the export a pull or preload builds."""
    if model_type not in CHECKED_FAMILIES:
        raise ModelUnavailable(
            f"OpenVINO GenAI's replies for {model_type} vision models are not checked against "
            f"transformers here (checked: {', '.join(sorted(CHECKED_FAMILIES))}); the torch engine serves it"
        )


def check_template(prompts: TorchVisionChat) -> None:
    """Refuse a family not checked on GenAI here, and a model whose chat template does not write
    what GenAI adds after each image: its prompt on GenAI would not be the template's."""
    check_family(prompts.model_type)
    marker, after = _AFTER_IMAGE.get(prompts.model_type, ("", ""))
    if not marker:
        return
    text = prompts.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}])
    if text.count(marker) != text.count(marker + after):
        raise ModelUnavailable(
            f"OpenVINO GenAI writes {after!r} after each {marker} of a {prompts.model_type} prompt and this model's "
            "chat template does not: its replies would not be the template's; the torch engine serves it"
        )


def _prompts(opts: LoadOptions, config: dict[str, Any]) -> TorchVisionChat:
    """The torch engine's prompt side with no weights: its tokenizer, image processor and the
    family's processor over the model's config alone."""
    from transformers import AutoConfig

    from hfd.backends.vlm_torch import prompt_builders

    tokenizer, images, processor = prompt_builders(opts, config)
    hf_config = AutoConfig.from_pretrained(opts.path, local_files_only=True,
                                           trust_remote_code=opts.trust_remote_code)  # fmt: skip
    return TorchVisionChat(SimpleNamespace(config=hf_config), tokenizer, images, processor, None,
                           _hf.eos_token_ids(opts.path, config))  # fmt: skip


def _local(init: dict[str, Any]) -> LocalVision:
    try:
        return LocalVision(init)
    except Exception as exc:
        raise ModelUnavailable(f"OpenVINO GenAI cannot load the vision model: {exc}") from exc
