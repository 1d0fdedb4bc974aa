"""Vision-language chat on torch: ``AutoModelForImageTextToText`` with the model's own image
processor and chat template (LLaVA, Qwen2-VL / Qwen2.5-VL, Gemma 3, Idefics3 / SmolVLM).

A prompt is built as transformers' processors build it: the chat template renders the messages
in Hugging Face's content-list form (``{"type": "image"}`` parts become the family's image
marker), the marker is expanded to as many image tokens as the vision tower yields for that
image, and the images become ``pixel_values`` (plus ``image_grid_thw`` for Qwen2-VL,
``pixel_attention_mask`` for Idefics3). The image processors are the PIL flavours (the default
ones need torchvision, which is never installed here). LLaVA and Gemma 3 use their processor
class, built from the PIL image processor, the tokenizer and ``processor_config.json``; Qwen2-VL
and Idefics3 / SmolVLM have their markers expanded by ``hfd.backends.vlm_inputs`` (their
processor classes cannot be built without torchvision).

Generation is transformers' ``generate`` (greedy or sampled, ``min_new_tokens``) over one
request or several compatible ones at once (``hfd.backends.vlm_batch``); each new token is
handed to its request's ``emit`` as it comes, and its ``stop`` (a ``threading.Event``) ends it
after the current token (a stop string, a client gone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hfd.backends import _hf, vlm_batch, vlm_inputs
from hfd.backends.base import FinishReason, LoadOptions, SamplingParams
from hfd.backends.vlm_batch import VisionPrompt as VisionPrompt
from hfd.backends.vlm_batch import VisionRow as VisionRow
from hfd.backends.vlm_batch import batch_key as batch_key
from hfd.client.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)


class TorchVisionChat:
    name = "torch"
    # Nothing beyond plain sampling (greedy, temperature, top_p, seed, min_tokens, stop strings).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, processor: Any, device: Any,
                 eos_token_ids: set[int]) -> None:  # fmt: skip
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        # The family's processor class; None: Qwen2-VL's markers, IdeficsTokens: Idefics3's,
        # expanded by vlm_inputs (``prompt_builders``).
        self.processor = processor
        self.device = device
        self.eos_token_ids = frozenset(eos_token_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else min(self.eos_token_ids, default=0))
        config = model.config
        self.model_type = str(getattr(config, "model_type", ""))
        text = getattr(config, "text_config", None) or config
        self.context_length = int(getattr(text, "max_position_embeddings", 0) or 2048)
        self.max_rows = 1  # rows generated together, and their padded prompt tokens (``load``)
        self.max_prefill = self.context_length
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
            tensors = self._inputs(text, list(images))
        except InvalidRequest:
            raise
        except Exception as exc:  # an image the processor cannot take (mode, size), a marker mismatch
            raise InvalidRequest(
                f"the images cannot be processed for this model: {exc}", param="messages"
            ) from exc
        return VisionPrompt(ids=[int(i) for i in tensors["input_ids"][0].tolist()], tensors=tensors)

    def _inputs(self, text: str, images: list[Any]) -> dict[str, Any]:
        if isinstance(self.processor, vlm_inputs.IdeficsTokens):
            return vlm_inputs.idefics_inputs(
                text, images, self.image_processor, self._tokenize, self.processor
            )
        if self.processor is None:
            return vlm_inputs.qwen_inputs(text, images, self.image_processor, self._tokenize)
        with self._lock:
            return dict(self.processor(images=images or None, text=[text], add_special_tokens=False,
                                       return_tensors="pt"))  # fmt: skip

    def _tokenize(self, text: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.tokenizer([text], add_special_tokens=False, return_tensors="pt"))

    # ------------------------------------------------------------------ generation (worker thread)

    def generate(self, prompt: VisionPrompt, params: SamplingParams, emit: Callable[[list[int]], None],
                 stop: threading.Event) -> FinishReason:  # fmt: skip
        """Generate for one prompt, calling ``emit`` with each new token; the finish reason."""
        return self.generate_batch([VisionRow(prompt, params, emit, stop)])[0]

    def generate_batch(self, rows: Sequence[VisionRow]) -> list[FinishReason]:
        """Rows of equal ``batch_key``, as few ``generate`` calls as their sizes allow
        (``hfd.backends.vlm_batch``); each row's finish reason, in order."""
        finish: dict[int, FinishReason] = {}
        for group in vlm_batch.groups(rows, max_rows=self.max_rows, max_prefill=self.max_prefill,
                                      context=self.context_length):  # fmt: skip
            finish.update(zip(map(id, group), self._generate(group), strict=True))
        return [finish[id(row)] for row in rows]

    def _generate(self, rows: list[VisionRow]) -> list[FinishReason]:
        dtype = next(self.model.parameters()).dtype
        inputs = vlm_batch.collate([r.prompt for r in rows], self.model_type, self.pad_token_id)
        inputs = {k: (v.to(self.device, dtype) if k == "pixel_values" else v.to(self.device))
                  for k, v in inputs.items()}  # fmt: skip
        return vlm_batch.generate(self.model, rows, inputs, sorted(self.eos_token_ids), self.pad_token_id)

    def memory_bytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))

    def close(self) -> None:
        self.model = None


def load(opts: LoadOptions) -> TorchVisionChat:
    from transformers import AutoModelForImageTextToText

    from hfd.backends.torch_backend import _from_pretrained, _prepare

    config = _hf.require_model_dir(opts.path)
    device, dtype = _prepare(opts)
    model = _from_pretrained(AutoModelForImageTextToText, opts, device, dtype)
    tokenizer, images, processor = prompt_builders(opts, config)
    vlm = TorchVisionChat(model, tokenizer, images, processor, device, _hf.eos_token_ids(opts.path, config))
    vlm.max_rows, vlm.max_prefill = max(1, opts.max_running), max(1, opts.max_batched_tokens)
    log.info("vision chat model loaded", extra={"model_path": str(opts.path), "device": str(device),
                                                "dtype": str(dtype), "model_type": vlm.model_type})  # fmt: skip
    return vlm


def prompt_builders(opts: LoadOptions, config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What builds a prompt, on any engine: the tokenizer (with its chat template), the PIL image
    processor and the family's processor class (None: Qwen2-VL's marker, ``IdeficsTokens``:
    Idefics3 / SmolVLM's, expanded by ``vlm_inputs``)."""
    from hfd.backends.torch_backend import _load_tokenizer

    tokenizer = _load_tokenizer(opts)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelUnavailable("the model's tokenizer has no chat template; vision chat needs one")
    model_type = str(config.get("model_type", ""))
    try:
        images = vlm_inputs.image_processor(opts.path, model_type)
    except ImportError as exc:  # a processor transformers says needs a library not installed here
        raise ModelUnavailable(f"the model's image processor cannot be built here: {exc}".strip()) from exc
    processor: Any = None
    if model_type in vlm_inputs.IDEFICS_TYPES:
        processor = vlm_inputs.idefics_tokens(opts.path, config, tokenizer)
    elif model_type not in vlm_inputs.QWEN_TYPES:
        processor = _processor(opts.path, model_type, images, tokenizer, config)
    return tokenizer, images, processor


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


_PROCESSORS = {"llava": "LlavaProcessor", "gemma3": "Gemma3Processor"}
