"""Tiny random-weight causal LMs of every family in the engine matrix (docs/engines.md).

Each family gets the same locally trained BPE tokenizer and ``<|role|>`` chat template as the
tiny Llama (``support.models``), and a 2-layer model of hidden size 64. Weights are drawn with
a wide std (``initializer_range`` 0.3 instead of 0.02): random logits are then far apart, so
the greedy token depends on the context and not on float noise between batch shapes or engines.

Models are cached under ``<repo>/.cache/test-models/causal-<family>-v<N>`` (bump
``CAUSAL_VERSION`` when a builder changes) and written atomically, like ``support.models``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.models import TINY_CHAT_TEMPLATE, _bpe_tokenizer, _cached

CAUSAL_VERSION = 1
VOCAB = 512
CONTEXT = 256
STD = 0.3

_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": CONTEXT,
    "initializer_range": STD,
}
_HEAD_DIM = {"head_dim": 16}
_SLIDING = 16  # shorter than the test's long prompt, so the window really cuts


@dataclass(frozen=True)
class Family:
    name: str  # the family as the matrix names it
    model_type: str  # transformers' model_type
    config: Callable[[], dict[str, Any]]  # config fields (token ids are added by the builder)
    recurrent: bool = False  # holds state-space (recurrent) state: the per-sequence path


def _moe(**extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {**_SHAPE, **extra}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llama", "llama", lambda: dict(_SHAPE)),
        Family("mistral", "mistral", lambda: {**_SHAPE, "sliding_window": _SLIDING}),
        Family("qwen2", "qwen2", lambda: dict(_SHAPE)),
        Family("qwen3", "qwen3", lambda: {**_SHAPE, **_HEAD_DIM}),
        Family("gemma", "gemma", lambda: {**_SHAPE, **_HEAD_DIM}),
        Family(
            "gemma2",
            "gemma2",
            lambda: {
                **_SHAPE,
                **_HEAD_DIM,
                "sliding_window": _SLIDING,
                "query_pre_attn_scalar": 16,
                "layer_types": ["sliding_attention", "full_attention"],
            },
        ),
        Family(
            "gemma3",
            "gemma3_text",
            lambda: {
                **_SHAPE,
                **_HEAD_DIM,
                "sliding_window": _SLIDING,
                "query_pre_attn_scalar": 16,
                "layer_types": ["sliding_attention", "full_attention"],
            },
        ),
        Family("phi3", "phi3", lambda: dict(_SHAPE)),
        Family(
            "gpt2",
            "gpt2",
            lambda: {
                "n_embd": 64,
                "n_layer": 2,
                "n_head": 4,
                "n_inner": 128,
                "n_positions": CONTEXT,
                "initializer_range": STD,
            },
        ),
        Family(
            "gpt_neox",
            "gpt_neox",
            lambda: {k: v for k, v in _SHAPE.items() if k != "num_key_value_heads"},
        ),
        Family(
            "opt",
            "opt",
            lambda: {
                "hidden_size": 64,
                "ffn_dim": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": CONTEXT,
                "word_embed_proj_dim": 64,
                "init_std": STD,
            },
        ),
        Family(
            "falcon",
            "falcon",
            lambda: {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": CONTEXT,
                "initializer_range": STD,
            },
        ),
        Family("stablelm", "stablelm", lambda: dict(_SHAPE)),
        Family("granite", "granite", lambda: dict(_SHAPE)),
        Family("mixtral", "mixtral", _moe(num_local_experts=4, num_experts_per_tok=2)),
        Family(
            "qwen2_moe",
            "qwen2_moe",
            _moe(
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=64,
                shared_expert_intermediate_size=128,
                decoder_sparse_step=1,
            ),
        ),
        Family(
            "qwen3_moe",
            "qwen3_moe",
            _moe(
                **_HEAD_DIM,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=64,
                decoder_sparse_step=1,
            ),
        ),
        Family(
            "mamba",
            "mamba",
            lambda: {
                "hidden_size": 64,
                "state_size": 8,
                "num_hidden_layers": 2,
                "conv_kernel": 4,
                "expand": 2,
                "initializer_range": STD,
            },
            recurrent=True,
        ),
        Family(
            # Granite 4's architecture: Mamba-2 layers and attention layers in one stack.
            "granitemoehybrid",
            "granitemoehybrid",
            lambda: {
                **_SHAPE,
                "layer_types": ["mamba", "attention"],
                "mamba_n_heads": 8,
                "mamba_d_head": 16,
                "mamba_d_state": 16,
                "mamba_n_groups": 1,
                "mamba_d_conv": 4,
                "mamba_expand": 2,
                "mamba_chunk_size": 64,
                "shared_intermediate_size": 128,
                "num_local_experts": 0,
                "position_embedding_type": "rope",
            },
            recurrent=True,
        ),
        Family(
            "mamba2",
            "mamba2",
            lambda: {
                "hidden_size": 64,
                "num_heads": 8,
                "head_dim": 16,
                "state_size": 16,
                "n_groups": 1,
                "num_hidden_layers": 2,
                "conv_kernel": 4,
                "expand": 2,
                "chunk_size": 64,
                "initializer_range": STD,
            },
            recurrent=True,
        ),
        Family(
            # Liquid's LFM2: gated short-convolution layers (conv state only) and attention layers.
            "lfm2",
            "lfm2",
            lambda: {**_SHAPE, "layer_types": ["conv", "full_attention"], "conv_L_cache": 3},
            recurrent=True,
        ),
    ]
}


def _build(family: Family, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_bpe_tokenizer(vocab_size=VOCAB),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=CONTEXT,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = AutoConfig.for_model(
        family.model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **family.config(),
    )
    torch.manual_seed(1234)
    model: Any = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def causal_model(name: str, path: Path | None = None) -> Path:
    """The tiny model of family ``name`` (a key of ``FAMILIES``), built once and cached."""
    family = FAMILIES[name]
    return _cached(f"causal-{name}", CAUSAL_VERSION, lambda out: _build(family, out), path)
