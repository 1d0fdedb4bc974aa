"""The OpenVINO generator's KV cache: how many bytes a token takes, how much the pipeline's
paged cache may take, and that as GenAI's scheduler fields.
"""

from __future__ import annotations

from typing import Any

from hfd.backends import hardware
from hfd.backends.base import LoadOptions


def kv_token_bytes(config: dict[str, Any]) -> int:
    """KV cache bytes per token (K and V, every layer) at two bytes per element."""
    text = config.get("text_config") or config
    layers = int(text.get("num_hidden_layers") or 0)
    heads = int(text.get("num_attention_heads") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (int(text.get("hidden_size") or 0) // max(heads, 1)))
    return 2 * layers * kv_heads * head_dim * 2


def kv_cache_target(opts: LoadOptions, config: dict[str, Any], context_length: int) -> int:
    """Bytes the pipeline's KV cache may take.

    The model option ``kv_cache_gb`` wins; else what the model manager reserved for the KV cache
    (``extra["kv_cache_bytes"]``); else enough for ``max_running`` sequences of up to 4096
    tokens (or the context, if shorter), at most a quarter of the available memory. A fixed size
    (rather than GenAI's grow-on-demand) keeps the model within its memory reservation, and
    prefix caching, which keeps blocks until the cache is full, needs a bound.
    """
    if opts.extra.get("kv_cache_gb"):
        return int(float(opts.extra["kv_cache_gb"]) * 1024**3)
    if opts.extra.get("kv_cache_bytes"):
        return int(opts.extra["kv_cache_bytes"])
    wanted = kv_token_bytes(config) * opts.max_running * min(context_length, 4096)
    ceiling = hardware.probe_memory().available_bytes // 4
    return min(wanted, ceiling) if ceiling > 0 else wanted


def kv_block_tokens(device: str) -> int:
    """Tokens per KV block in GenAI's paged cache: 32 on the CPU, 16 on GPUs."""
    return 32 if device.startswith("CPU") else 16


def kv_cache_blocks(target: int, token_bytes: int, device: str, context_length: int, max_running: int) -> int:
    """``target`` bytes as KV blocks, never fewer than one full-context sequence plus a block for
    every other running one: a prompt that cannot fit the cache at all would be dropped."""
    block = kv_block_tokens(device)
    floor = -(-context_length // block) + max(0, max_running - 1)
    return max(floor, target // max(1, token_bytes * block))


def size_kv_cache(
    scheduler: dict[str, Any], opts: LoadOptions, config: dict[str, Any], device: str, context_length: int
) -> int:
    """Set the KV cache's size in GenAI's ``scheduler`` fields (``max_num_seqs`` already there);
    returns the bytes it takes."""
    token_bytes = kv_token_bytes(config)
    target = kv_cache_target(opts, config, context_length)
    if token_bytes > 0:
        blocks = kv_cache_blocks(target, token_bytes, device, context_length, scheduler["max_num_seqs"])
        scheduler["num_kv_blocks"] = blocks
        return blocks * token_bytes * kv_block_tokens(device)
    # A config we cannot read the attention shape from: whole GB, as GenAI takes it.
    scheduler["cache_size"] = max(1, -(-target // 1024**3))
    return int(scheduler["cache_size"]) * 1024**3
