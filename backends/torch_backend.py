"""The PyTorch/transformers engine: embeddings and continuously batched generation, any device
torch supports (CPU, CUDA, MPS).

Loading is strict: local files only, safetensors unless pickle is allowed for the model, remote
code only when allowed. torch and transformers are imported when a model is loaded, never when
this module is (``available()`` must answer on a box without torch).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hfd.backends import _hf, capabilities
from hfd.backends.base import LoadOptions, SamplingParams, StepOutput, Task
from hfd.client.errors import HfdError, InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    import torch

    from hfd.backends.torch_batcher import MaskPlan
    from hfd.backends.torch_encoder import TorchEncoder, TorchHead

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


class TorchBackend:
    name = "torch"
    tasks: frozenset[Task] = frozenset({"generate", "embed"})

    def available(self) -> tuple[bool, str]:
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                return False, f"{module} is not installed"
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except Exception as exc:  # a broken install must not take the daemon down
            return False, f"cannot import the torch engine's libraries: {exc}"
        return True, ""

    def devices(self) -> list[str]:
        try:
            import torch
        except Exception:
            return []
        found = ["cpu"]
        try:
            if torch.cuda.is_available():
                found.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
            if torch.backends.mps.is_available():
                found.append("mps")
        except Exception as exc:  # a driver problem hides the device, it does not fail the daemon
            log.warning("accelerator probe failed", extra={"error": str(exc)})
        return found

    def load_encoder(self, opts: LoadOptions) -> TorchEncoder | TorchHead:
        if opts.task != "embed":  # a classification head (rerank, classify, token-classify)
            from hfd.backends.torch_encoder import load_head

            return load_head(opts)
        from transformers import AutoModel

        from hfd.backends.numpy_encoder import encoder_max_length
        from hfd.backends.st_config import read_pooling_config
        from hfd.backends.torch_encoder import TorchEncoder

        _hf.require_model_dir(opts.path)
        pooling = read_pooling_config(opts.path)
        device, dtype = _prepare(opts)
        model = _from_pretrained(AutoModel, opts, device, dtype)
        hf_tokenizer = _load_tokenizer(opts)
        max_length = encoder_max_length(
            pooling, hf_tokenizer.model_max_length, _hf.max_positions(model.config)
        )
        tokenizer = _frozen_tokenizer(hf_tokenizer, truncate_to=max_length)
        # Read through the config class: DistilBERT's `dim` is its `hidden_size` there.
        hidden = pooling.word_embedding_dimension or _hf.config_int(model.config, "hidden_size")
        pad = hf_tokenizer.pad_token_id
        encoder = TorchEncoder(
            model,
            tokenizer,
            device=device,
            pooling=pooling,
            max_length=max_length,
            dimensions=pooling.output_dimensions(hidden),
            pad_token_id=int(pad if pad is not None else 0),
            uses_token_types="token_type_ids" in inspect.signature(model.forward).parameters,
        )
        log.info(
            "encoder loaded",
            extra={"model_path": str(opts.path), "device": str(device), "dtype": str(dtype),
                   "pooling": pooling.describe, "attention": model.config._attn_implementation},
        )  # fmt: skip
        return encoder

    def load_speech(self, opts: LoadOptions) -> Any:
        from hfd.backends import whisper_torch  # Whisper: speech recognition

        return whisper_torch.load(opts)

    def load_image_text(self, opts: LoadOptions) -> Any:
        from hfd.backends import clip_torch  # CLIP, SigLIP: image and text embeddings

        return clip_torch.load(opts)

    def load_seq2seq(self, opts: LoadOptions) -> Any:
        from hfd.backends import seq2seq_torch  # T5, BART, Marian: encoder-decoder generation

        return seq2seq_torch.load(opts)

    def load_vision_chat(self, opts: LoadOptions) -> Any:
        from hfd.backends import vlm_torch  # LLaVA, Qwen2-VL, ...: chat with images

        return vlm_torch.load(opts)

    def load_generator(self, opts: LoadOptions) -> TorchGenerator:
        from transformers import AutoModelForCausalLM

        config = _hf.require_model_dir(opts.path)
        device, dtype = _prepare(opts)
        model = _from_pretrained(AutoModelForCausalLM, opts, device, dtype)
        if device.type == "cpu":
            # On CUDA a mask + enable_gqa falls back to the math kernel: keep the fused one there.
            from hfd.backends.torch_attention import use_gqa_attention

            use_gqa_attention(model)
        hf_tokenizer = _load_tokenizer(opts)
        generator = TorchGenerator(model, hf_tokenizer, opts, device, _hf.eos_token_ids(opts.path, config))
        log.info(
            "generator loaded",
            extra={"model_path": str(opts.path), "device": str(device), "dtype": str(dtype),
                   "context_length": generator.context_length, "max_running": opts.max_running,
            "attention": model.config._attn_implementation},
        )  # fmt: skip
        return generator


class TorchGenerator(_hf.PromptTokens):
    """A ``GenerationModel`` over ``ContinuousBatcher``, plus the tokenizer-facing calls."""

    name = "torch"
    capabilities = capabilities.ALL  # logprobs, prompt logprobs, every penalty, logit_bias

    def __init__(
        self, model: Any, hf_tokenizer: Any, opts: LoadOptions, device: torch.device, eos_ids: set[int]
    ) -> None:
        from hfd.backends.torch_batcher import ContinuousBatcher

        self.model = model
        self.device = str(device)
        self._hf_tokenizer = hf_tokenizer
        self._tokenizer = _frozen_tokenizer(hf_tokenizer, truncate_to=None)
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.vocab_size = self._vocab_size  # logit_bias ids are checked against it
        text_config = model.config.get_text_config(decoder=True)
        self.context_length = int(getattr(text_config, "max_position_embeddings", 0) or 0) or int(
            hf_tokenizer.model_max_length if hf_tokenizer.model_max_length < 10**7 else 2048
        )
        if hf_tokenizer.eos_token_id is not None:
            eos_ids = eos_ids | {int(hf_tokenizer.eos_token_id)}
        self.eos_token_ids: frozenset[int] = frozenset(eos_ids)
        pad = hf_tokenizer.pad_token_id
        if pad is None:
            pad = min(eos_ids) if eos_ids else 0
        from hfd.backends.torch_recurrent import RecurrentBatcher, recurrent_layout

        layout = recurrent_layout(model)  # state-space layers: their own batcher, no padding
        self._batcher: ContinuousBatcher | RecurrentBatcher
        if layout is not None:
            self._batcher = RecurrentBatcher(
                model, layout=layout, device=device, context_length=self.context_length,
                eos_token_ids=self.eos_token_ids, max_running=opts.max_running,
                max_batched_tokens=opts.max_batched_tokens,
            )  # fmt: skip
            return
        self._batcher = ContinuousBatcher(
            model,
            device=device,
            context_length=self.context_length,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=int(pad),
            max_running=opts.max_running,
            max_batched_tokens=opts.max_batched_tokens,
            mask_plan=_mask_plan(model),
            num_layers=int(text_config.num_hidden_layers),
            logits_to_keep="logits_to_keep" in inspect.signature(model.forward).parameters,
            prefixes=_prefix_store(opts),
        )

    # Thread-safe: the frozen tokenizer is only read; chat templates render with no shared state.
    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._hf_tokenizer.decode(list(token_ids), skip_special_tokens=True))

    # Any thread: the service compiles before the sequence joins the batch (backends.grammar).
    def compile_constraint(self, spec: Any) -> Any:
        from hfd.backends.grammar import grammars_for, logits_width

        width = logits_width(self.model, self._vocab_size)
        grammars = grammars_for(
            self, self._hf_tokenizer, vocab_size=width, stop_token_ids=self.eos_token_ids, engine=self.name
        )
        return grammars.compile(spec)

    # Worker thread only.
    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        vocab = self._vocab_size
        if any(not 0 <= int(t) < vocab for t in prompt_ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        self._batcher.add(seq_id, prompt_ids, params)

    def cancel(self, seq_id: int) -> None:
        self._batcher.cancel(seq_id)

    def step(self) -> list[StepOutput]:
        return self._batcher.step()

    def has_work(self) -> bool:
        return self._batcher.has_work()

    @property
    def prefilled_tokens(self) -> int:
        """Prompt tokens prefilled so far (a prompt shared by a request's n rows counts once)."""
        return self._batcher.prefilled_tokens

    def memory_bytes(self) -> int:
        from hfd.backends.torch_encoder import module_bytes

        return module_bytes(self.model) + self._batcher.cache_bytes()

    def close(self) -> None:
        self._batcher.close()
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


# -- loading -----------------------------------------------------------------------------------


def _prepare(opts: LoadOptions) -> tuple[torch.device, torch.dtype]:
    """Device, dtype and thread count for a load; a clear error for a device not present."""
    import torch

    try:
        device = torch.device(opts.device)
    except (RuntimeError, ValueError) as exc:
        raise InvalidRequest(f"unknown torch device {opts.device!r}", param="device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {opts.device} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ModelUnavailable(
            f"device {opts.device} requested but there are {torch.cuda.device_count()} CUDA devices"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelUnavailable("device mps requested but MPS is not available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidRequest(f"the torch engine does not run on {opts.device!r}", param="device")

    if opts.dtype is None:
        # Half precision is the norm on accelerators; on CPUs fp32 is both exact and fastest.
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    else:
        name = _DTYPES.get(opts.dtype.lower())
        if name is None:
            raise InvalidRequest(
                f"unknown dtype {opts.dtype!r}; use float32, float16 or bfloat16", param="dtype"
            )
        dtype = getattr(torch, name)

    if opts.threads > 0 and device.type == "cpu":
        # Process-wide in torch: the last loaded model's setting wins.
        torch.set_num_threads(opts.threads)
    return device, dtype


def _from_pretrained(auto: Any, opts: LoadOptions, device: torch.device, dtype: torch.dtype) -> Any:
    use_safetensors = _hf.check_weights(opts.path, allow_pickle=bool(opts.extra.get("allow_pickle")))
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "local_files_only": True,
        "use_safetensors": use_safetensors,
        "trust_remote_code": opts.trust_remote_code,
    }
    try:
        attention = attention_implementation(auto, opts)
        model = auto.from_pretrained(opts.path, attn_implementation=attention, **kwargs)
        model = model.to(device).eval()
    except HfdError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"cannot load {opts.path} with transformers: {exc}") from exc
    return model


def attention_implementation(auto: Any, opts: LoadOptions) -> str:
    """``sdpa`` when the model class that ``auto`` resolves to supports it, else ``eager``.

    Decided from the class's ``_supports_sdpa`` before loading: transformers refuses an
    unsupported ``sdpa`` request with a plain ``ValueError`` whose text changes between releases
    (5.5's does not say "sdpa"), so matching on the message missed MPNet and DeBERTa-v2.
    """
    from transformers import AutoConfig
    from transformers.models.auto.auto_factory import _get_model_class

    config = AutoConfig.from_pretrained(
        opts.path, local_files_only=True, trust_remote_code=opts.trust_remote_code
    )
    try:
        model_class = _get_model_class(config, auto._model_mapping)
    except (KeyError, ValueError, AttributeError):
        # Remote code (auto_map) names its class only once from_pretrained imports it; eager
        # attention is the one every architecture implements.
        return "eager"
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


def _load_tokenizer(opts: LoadOptions) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            opts.path, local_files_only=True, trust_remote_code=opts.trust_remote_code
        )
    except Exception as exc:
        raise ModelUnavailable(f"cannot load the tokenizer of {opts.path}: {exc}") from exc
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ModelUnavailable(
            f"{opts.path} has no fast tokenizer (tokenizer.json); the torch engine needs one"
        )
    return tokenizer


def _frozen_tokenizer(hf_tokenizer: Any, *, truncate_to: int | None) -> Any:
    """A private copy of the Rust tokenizer, configured once and then only read.

    transformers' wrapper re-configures truncation and padding on the shared Rust object on
    calls, which races between threads; a copy that nobody configures again does not.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tok.no_padding()
    if truncate_to is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=truncate_to)
    return tok


def _prefix_store(opts: LoadOptions) -> Any:
    """Kept K/V for prompts that repeat a finished sequence (``torch_prefix``), unless the
    ``prefix_caching`` setting is off; within the model's reserved KV memory."""
    from hfd.backends.torch_prefix import DEFAULT_BUDGET_BYTES, PrefixStore

    if not opts.flag("prefix_caching", True):
        return None
    budget = opts.extra.get("prefix_cache_bytes") or opts.extra.get("kv_cache_bytes") or DEFAULT_BUDGET_BYTES
    return PrefixStore(int(budget))


def _mask_plan(model: Any) -> MaskPlan:
    from hfd.backends.torch_batcher import MaskPlan

    text_config = model.config.get_text_config(decoder=True)
    from hfd.backends.torch_attention import NAME as GQA_SDPA

    boolean = getattr(model.config, "_attn_implementation", "sdpa") in ("sdpa", GQA_SDPA)
    window = getattr(text_config, "sliding_window", None)
    window = int(window) if isinstance(window, int) and window > 0 else None
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types:
        kinds = set(layer_types)
        unsupported = kinds - {"full_attention", "sliding_attention"}
        if unsupported:
            raise ModelUnavailable(
                f"the torch engine cannot batch layers of type {', '.join(sorted(unsupported))}"
            )
        if kinds == {"full_attention"}:
            return MaskPlan(window=None, layer_windows=None, boolean=boolean)
        windows = {k: (window if k == "sliding_attention" else None) for k in kinds}
        return MaskPlan(window=None, layer_windows=windows, boolean=boolean)
    return MaskPlan(window=window, layer_windows=None, boolean=boolean)
