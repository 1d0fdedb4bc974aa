"""The torch engine's encoder-decoder (seq2seq) generator: T5, MT5, BART, mBART, Marian, Pegasus.

A ``GenerationModel`` like the causal one, so the continuous-batching scheduler, stop strings,
sampling, penalties, logprobs, usage and the response cache all apply unchanged. What differs
for the service: the prompt is the *encoder's* input (``context_length`` is the encoder's limit),
the output has a limit of its own (``decoder_length``), and a chat is one encoder input (see
``apply_chat_template``). Loading is as strict as the causal engine's (local files, safetensors
unless pickle is allowed, remote code only when allowed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hfd.backends import _hf, capabilities
from hfd.backends.base import LoadOptions
from hfd.backends.torch_backend import TorchGenerator
from hfd.client.errors import InvalidRequest

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)

# Every feature of the causal engine but the prompt's logprobs: the encoder input has none.
CAPABILITIES = capabilities.ALL - {capabilities.PROMPT_LOGPROBS}
# T5 has no position table; its tokenizer's limit (512) is what it was trained on.
_DEFAULT_LIMIT = 512


def load(opts: LoadOptions) -> Seq2SeqGenerator:
    from transformers import AutoModelForSeq2SeqLM

    from hfd.backends.torch_backend import _from_pretrained, _load_tokenizer, _prepare

    config = _hf.require_model_dir(opts.path)
    device, dtype = _prepare(opts)
    model = _from_pretrained(AutoModelForSeq2SeqLM, opts, device, dtype)
    generator = Seq2SeqGenerator(
        model, _load_tokenizer(opts), opts, device, _hf.eos_token_ids(opts.path, config)
    )
    limits = {"encoder_length": generator.context_length, "decoder_length": generator.decoder_length}
    where = {"model_path": str(opts.path), "device": str(device), "dtype": str(dtype)}
    log.info(
        "seq2seq generator loaded", extra={**where, **limits, "attention": model.config._attn_implementation}
    )
    return generator


def _limits(model: Any, hf_tokenizer: Any) -> tuple[int, int]:
    """(most encoder tokens, most generated tokens): the position table's size and the
    tokenizer's limit, the smaller; the decoder's is its position table (else the same)."""
    table = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    tok = int(hf_tokenizer.model_max_length) if hf_tokenizer.model_max_length < 10**7 else 0
    known = [x for x in (table, tok) if x > 0]
    encoder = min(known) if known else _DEFAULT_LIMIT
    return encoder, table or encoder


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The last user message's text (its text parts joined), the encoder input of a chat for a
    model without a chat template."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content or "")
    raise InvalidRequest(
        "this model is an encoder-decoder model without a chat template: its input is the last user "
        "message, and these messages have none",
        param="messages",
    )


class Seq2SeqGenerator(TorchGenerator):
    """A ``GenerationModel`` over ``Seq2SeqBatcher``; ``TorchGenerator``'s calls (add, step,
    cancel, decode, memory, close) over another batcher."""

    name = "torch"
    capabilities = CAPABILITIES
    encoder_decoder = True  # the scheduler decodes the output without the prompt in front

    def __init__(
        self, model: Any, hf_tokenizer: Any, opts: LoadOptions, device: torch.device, eos_ids: set[int]
    ) -> None:
        from hfd.backends.seq2seq_batcher import Seq2SeqBatcher
        from hfd.backends.torch_backend import _frozen_tokenizer, _mask_plan

        # The decoder's vocabulary is the output head's (Marian's may differ from the encoder's).
        self.vocab_size = self._vocab_size = int(model.get_output_embeddings().out_features)
        self.context_length, self.decoder_length = _limits(model, hf_tokenizer)
        self.model, self.device = model, str(device)
        self._hf_tokenizer, self._tokenizer = hf_tokenizer, _frozen_tokenizer(hf_tokenizer, truncate_to=None)
        generation = getattr(model, "generation_config", None)
        gen_eos = getattr(generation, "eos_token_id", None)
        for value in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if isinstance(value, int):
                eos_ids = eos_ids | {value}
        if hf_tokenizer.eos_token_id is not None:
            eos_ids = eos_ids | {int(hf_tokenizer.eos_token_id)}
        self.eos_token_ids: frozenset[int] = frozenset(eos_ids)
        pad = (
            hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else model.config.pad_token_id
        )
        start = getattr(generation, "decoder_start_token_id", None)
        if start is None:
            start = model.config.decoder_start_token_id
        if not isinstance(start, int):
            raise InvalidRequest("this encoder-decoder model's config has no decoder_start_token_id")
        forced = getattr(generation, "forced_bos_token_id", None)
        if forced is None:
            forced = getattr(model.config, "forced_bos_token_id", None)
        decoder = model.get_decoder()
        layers = getattr(decoder, "layers", None) or decoder.block
        self._batcher = Seq2SeqBatcher(
            model,
            encoder_length=self.context_length,
            decoder_length=self.decoder_length,
            decoder_start=int(start),
            forced_bos=int(forced) if isinstance(forced, int) else None,
            device=device,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=int(pad if pad is not None else 0),
            max_running=opts.max_running,
            max_batched_tokens=opts.max_batched_tokens,
            mask_plan=_mask_plan(model),
            num_layers=len(layers),
        )

    # Thread-safe: the frozen tokenizer is only read; chat templates render with no shared state.
    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """One encoder input for a chat: the template's text (encoded with the tokenizer's own
        special tokens, as any encoder input) when the tokenizer has a template, else the last
        user message's text."""
        if tools:
            raise InvalidRequest("encoder-decoder (seq2seq) models do not call tools", param="tools")
        if not self.chat_template:
            return self.encode_prompt(last_user_text(messages))
        try:
            text = self._hf_tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 errors, including the template's own raise_exception()
            raise InvalidRequest(
                f"the chat template rejected these messages: {exc}", param="messages"
            ) from exc
        return self.encode_prompt(str(text))

    # Any thread: the service compiles before the sequence joins the batch. Refused: the grammar
    # tooling assumes a causal model's vocabulary and stop rules.
    def compile_constraint(self, spec: Any) -> Any:
        param = str(getattr(spec, "param", "response_format"))
        raise InvalidRequest(
            f"structured output ({param}) is not supported for encoder-decoder (seq2seq) models", param=param
        )
