"""The seq2seq task: text-to-text generation with an encoder-decoder model (T5, MT5, BART,
mBART, Marian, Pegasus...), served on ``/v1/completions`` and ``/v1/chat/completions``.

Served by the generation scheduler, like ``generate``, through the same service path (stop
strings, sampling, usage, the response cache); the engine is ``hfd.backends.seq2seq_torch``.
What differs is told to the service here: the prompt is the encoder's input and the completion
has the decoder's own limit (``output_room``), and what a seq2seq model cannot do is refused by
name (``refuse_chat``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from hfd.client.errors import ContextLengthExceeded, InvalidRequest

if TYPE_CHECKING:
    from hfd.daemon.tasks.detect import Snapshot

TASK: Final = "seq2seq"
PIPELINE_TAGS: Final = ("text2text-generation", "translation", "summarization")
# Encoder-decoder families whose config.json may not say is_encoder_decoder.
_TYPES: Final = frozenset(
    {"t5", "mt5", "umt5", "longt5", "bart", "mbart", "marian", "pegasus", "pegasus_x", "plbart",
     "blenderbot", "blenderbot-small", "m2m_100", "nllb-moe", "bigbird_pegasus", "led", "fsmt"}
)  # fmt: skip
# Encoder-decoder models of other inputs, which have tasks of their own (or none here).
_NOT_TEXT: Final = frozenset(
    {"whisper", "speech_to_text", "speech-encoder-decoder", "vision-encoder-decoder", "pix2struct",
     "donut-swin", "nougat", "florence2", "kosmos-2", "seamless_m4t", "seamless_m4t_v2"}
)  # fmt: skip
# Generation heads: MarianMTModel is Marian's; T5WithLMHeadModel is t5-small's old name.
_HEADS: Final = ("ForConditionalGeneration", "ForSeq2SeqLM", "LMHeadModel", "MTModel")


def detect(s: Snapshot) -> bool:
    """A text encoder-decoder: a generation head of a known family, or one whose config says
    ``is_encoder_decoder`` or whose card's ``pipeline_tag`` is text-to-text, with no image or
    audio processor and not an image or speech model."""
    model_type = s.config.get("model_type")
    if model_type in _NOT_TEXT or s.processor_files:
        return False
    if s.architectures and not s.has_head(*_HEADS):
        return False  # an encoder-decoder's other heads (classification, QA) are not generation
    if model_type in _TYPES or s.config.get("is_encoder_decoder") is True:
        return True
    # A conditional-generation head whose card says text-to-text (else it is left to generate).
    return s.pipeline_tag in PIPELINE_TAGS and s.has_head(*_HEADS)


def output_room(model: object, prompt_len: int, req: Any) -> int | None:
    """How many tokens a seq2seq model may generate after a prompt of ``prompt_len`` tokens: its
    decoder's limit, whatever the prompt's length; None for a causal model, whose prompt and
    completion share its context. Refuses a prompt longer than the encoder takes and a
    ``max_tokens`` beyond the decoder's limit."""
    decoder = getattr(model, "decoder_length", None)
    if not isinstance(decoder, int):
        return None
    encoder = int(getattr(model, "context_length", 0))
    if prompt_len > encoder:
        raise ContextLengthExceeded(
            f"this model's encoder takes at most {encoder} tokens; the prompt has {prompt_len}. "
            "Shorten the prompt.",
            param="messages" if hasattr(req, "messages") else "prompt",
            details={"prompt_tokens": prompt_len, "context_length": encoder},
        )
    limit = req.token_limit()
    if limit is not None and limit > decoder:
        raise ContextLengthExceeded(
            f"this model's decoder generates at most {decoder} tokens; the request asks for {limit}. "
            "Lower max_tokens.",
            param="max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens",
            details={"max_tokens": limit, "decoder_length": decoder},
        )
    return decoder


def refuse_chat(task: str, req: Any) -> None:
    """A 400 naming what a chat request asks that a seq2seq model cannot do: call tools (the
    chat rendering folds them into a system prompt for templates without tools, which a seq2seq
    input, the last user message, would silently drop)."""
    if task != TASK:
        return
    if getattr(req, "tools", None):
        raise InvalidRequest("encoder-decoder (seq2seq) models do not call tools", param="tools")
    choice = getattr(req, "tool_choice", None)
    if choice not in (None, "none"):
        raise InvalidRequest("encoder-decoder (seq2seq) models do not call tools", param="tool_choice")


def cache_bytes(config: Mapping[str, Any], *, max_running: int, context: int, element_bytes: float) -> int:
    """The seq2seq engine's caches at their fullest, before loading: per decoder layer, the
    self-attention keys and values of ``context`` generated tokens and the cross-attention keys
    and values of a ``context``-token encoder input, for ``max_running`` rows:
    ``2 x decoder layers x heads x head_dim x 2 (K and V) x bytes x max_running x context``."""

    def first(*keys: str) -> int:
        for key in keys:
            value = config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return 0

    layers = first("decoder_layers", "num_decoder_layers", "num_layers", "num_hidden_layers")
    heads = first("decoder_attention_heads", "num_heads", "num_attention_heads") or 1
    head_dim = first("d_kv", "head_dim") or first("d_model", "hidden_size") // heads
    return int(2 * layers * heads * head_dim * 2 * element_bytes * max_running * context)


def seq2seq_record(TaskRecord: Any) -> Any:
    """The record, made with the registry's ``TaskRecord`` (passed in: no import cycle)."""
    return TaskRecord(
        name=TASK,
        summary="text-to-text generation with an encoder-decoder model (T5, BART, Marian, mBART)",
        scheduler="generation",
        engine_task="generate",
        engines=("torch",),
        detect=detect,
        pipeline_tags=PIPELINE_TAGS,
        loader="load_seq2seq",
    )
