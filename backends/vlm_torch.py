"""Vision-language chat on torch: ``AutoModelForImageTextToText`` with the model's own image
processor and chat template (LLaVA, Qwen2-VL / Qwen2.5-VL, Gemma 3, Idefics3 / SmolVLM).

A prompt is built as transformers' processors build it: the chat template renders the messages
in Hugging Face's content-list form (``{"type": "image"}`` parts become the family's image
marker), the marker is expanded to as many image tokens as the vision tower yields for that
image, and the images become ``pixel_values`` (plus ``image_grid_thw`` for Qwen2-VL). The image
processors are the PIL flavours (``hfd.backends.clip_torch.image_processor``): the default
ones need torchvision, which is never installed here. Qwen2-VL's marker is expanded here (its
processor class insists on a torchvision video processor); other families use their processor
class, built from the PIL image processor, the tokenizer and ``processor_config.json``.

Generation is transformers' ``generate`` (greedy or sampled, ``min_new_tokens``), one request at
a time per model; each new token is handed to ``emit`` as it comes, and ``stop`` (a
``threading.Event``) ends it after the current token (a stop string, a client gone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfd.backends import _hf
from hfd.backends.base import FinishReason, LoadOptions, SamplingParams
from hfd.client.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)

# Families whose image marker is expanded here (their processor class needs torchvision).
_QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class VisionPrompt:
    """One request's model inputs: the prompt ids and the image tensors, ready for ``generate``."""

    ids: list[int]
    tensors: dict[str, Any]  # input_ids, attention_mask, pixel_values, ...

    @property
    def tokens(self) -> int:
        return len(self.ids)


class TorchVisionChat:
    name = "torch"
    # Nothing beyond plain sampling (greedy, temperature, top_p, seed, min_tokens, stop strings).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, processor: Any, device: Any,
                 eos_token_ids: set[int]) -> None:  # fmt: skip
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = processor  # None: the marker is expanded here (Qwen2-VL)
        self.device = device
        self.eos_token_ids = frozenset(eos_token_ids)
        config = model.config
        self.model_type = str(getattr(config, "model_type", ""))
        text = getattr(config, "text_config", None) or config
        self.context_length = int(getattr(text, "max_position_embeddings", 0) or 2048)
        self._lock = threading.Lock()  # the tokenizer wrapper is not thread-safe

    # ------------------------------------------------------------------ prompts (any thread)

    def decode(self, token_ids: Sequence[int]) -> str:
        with self._lock:
            return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        """The chat template's text for ``messages`` (Hugging Face content lists)."""
        with self._lock:
            try:
                text = self.tokenizer.apply_chat_template(
                    list(messages), tokenize=False, add_generation_prompt=True
                )
            except Exception as exc:  # a template error is the request's (roles out of order...)
                raise InvalidRequest(
                    f"the model's chat template refused the messages: {exc}", param="messages"
                ) from exc
        return str(text)

    def prepare(self, messages: Sequence[dict[str, Any]], images: Sequence[Any]) -> VisionPrompt:
        """Prompt ids and image tensors for ``messages`` whose image parts are ``images``, in order."""
        text = self.render(messages)
        try:
            if self.processor is None:
                tensors = self._qwen_inputs(text, list(images))
            else:
                with self._lock:
                    tensors = dict(self.processor(images=list(images) or None, text=[text],
                                                  add_special_tokens=False, return_tensors="pt"))  # fmt: skip
        except InvalidRequest:
            raise
        except Exception as exc:  # an image the processor cannot take (mode, size), a marker mismatch
            raise InvalidRequest(
                f"the images cannot be processed for this model: {exc}", param="messages"
            ) from exc
        return VisionPrompt(ids=[int(i) for i in tensors["input_ids"][0].tolist()], tensors=tensors)

    def _qwen_inputs(self, text: str, images: list[Any]) -> dict[str, Any]:
        marker = "<|image_pad|>"
        if text.count(marker) != len(images):
            raise InvalidRequest(
                f"the chat template placed {text.count(marker)} image markers for {len(images)} images",
                param="messages",
            )
        tensors: dict[str, Any] = {}
        if images:
            pixels = self.image_processor(images=images, return_tensors="pt")
            merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
            pieces = text.split(marker)
            counts = [int(grid.prod()) // merge for grid in pixels["image_grid_thw"]]
            text = pieces[0] + "".join(marker * n + rest for n, rest in zip(counts, pieces[1:], strict=True))
            tensors.update(pixels)
        with self._lock:
            tensors.update(self.tokenizer([text], add_special_tokens=False, return_tensors="pt"))
        return tensors

    # ------------------------------------------------------------------ generation (worker thread)

    def generate(self, prompt: VisionPrompt, params: SamplingParams, emit: Callable[[list[int]], None],
                 stop: threading.Event) -> FinishReason:  # fmt: skip
        """Generate for one prompt, calling ``emit`` with each new token; the finish reason."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        produced = 0

        class _Emit(BaseStreamer):  # type: ignore[misc]
            first = True

            def put(self, value: Any) -> None:
                nonlocal produced
                if self.first:  # generate hands the prompt over first
                    self.first = False
                    return
                ids = [int(t) for t in value.reshape(-1).tolist()]
                produced += len(ids)
                emit(ids)

            def end(self) -> None:
                pass

        class _Stop(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
                )

        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            # ignore_eos: end-of-sequence is masked until max_tokens, so the length is fixed.
            "min_new_tokens": params.max_tokens if params.ignore_eos else params.min_tokens,
            "do_sample": not params.greedy,
            "streamer": _Emit(),
            "stopping_criteria": StoppingCriteriaList([_Stop()]),
        }
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            if params.seed is not None:
                torch.manual_seed(params.seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.device, dtype) if k == "pixel_values" else v.to(self.device))
                  for k, v in prompt.tensors.items()}  # fmt: skip
        with torch.inference_mode():
            self.model.generate(**inputs, **kwargs)
        if stop.is_set():
            return "cancelled"
        return "length" if produced >= params.max_tokens else "stop"

    def memory_bytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))

    def close(self) -> None:
        self.model = None


def load(opts: LoadOptions) -> TorchVisionChat:
    from transformers import AutoModelForImageTextToText

    from hfd.backends.clip_torch import image_processor
    from hfd.backends.torch_backend import _from_pretrained, _load_tokenizer, _prepare

    config = _hf.require_model_dir(opts.path)
    device, dtype = _prepare(opts)
    model = _from_pretrained(AutoModelForImageTextToText, opts, device, dtype)
    tokenizer = _load_tokenizer(opts)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelUnavailable("the model's tokenizer has no chat template; vision chat needs one")
    try:
        images = image_processor(opts.path)
    except ImportError as exc:  # transformers 5.5 marks Idefics3's PIL processor as needing torchvision
        raise ModelUnavailable(f"the model's image processor cannot be built here: {exc}".strip()) from exc
    model_type = str(config.get("model_type", ""))
    processor = (
        None if model_type in _QWEN_TYPES else _processor(opts.path, model_type, images, tokenizer, config)
    )
    vlm = TorchVisionChat(model, tokenizer, images, processor, device, _hf.eos_token_ids(opts.path, config))
    log.info("vision chat model loaded", extra={"model_path": str(opts.path), "device": str(device),
                                                "dtype": str(dtype), "model_type": model_type})  # fmt: skip
    return vlm


def _processor(path: Path, model_type: str, images: Any, tokenizer: Any, config: dict[str, Any]) -> Any:
    """The family's processor class over the PIL image processor (no torchvision)."""
    import transformers

    settings = (
        _hf.read_json(path / "processor_config.json") if (path / "processor_config.json").is_file() else {}
    )
    name = str(settings.pop("processor_class", "") or _PROCESSORS.get(model_type, ""))
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise ModelUnavailable(f"no processor known for {model_type!r} models; vision chat cannot serve it")
    if model_type == "llava":  # LLaVA's processor counts image tokens from the vision tower's patches
        vision = config.get("vision_config") or {}
        settings.setdefault("patch_size", vision.get("patch_size"))
        settings.setdefault("vision_feature_select_strategy", config.get("vision_feature_select_strategy"))
    try:
        return cls(
            image_processor=images, tokenizer=tokenizer, chat_template=tokenizer.chat_template, **settings
        )
    except Exception as exc:
        raise ModelUnavailable(f"cannot build the {name} for this model: {exc}") from exc


_PROCESSORS = {"llava": "LlavaProcessor", "gemma3": "Gemma3Processor", "idefics3": "Idefics3Processor",
               "smolvlm": "SmolVLMProcessor"}  # fmt: skip
