"""Tokenize, pad and pool for encoder engines that run outside torch (OpenVINO, ONNX Runtime).

The engine itself only maps padded ``input_ids``/``attention_mask`` arrays to token embeddings;
everything around it is here, in numpy, with the same semantics as sentence-transformers (and as
the torch engine), so embeddings agree across engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import _hf
from hfd.backends.base import TokenizedBatch
from hfd.client.errors import InvalidRequest, ModelUnavailable


def pool(hidden: np.ndarray, mask: np.ndarray, config: _hf.PoolingConfig) -> np.ndarray:
    """Token embeddings ``[batch, tokens, dim]`` and a 0/1 mask ``[batch, tokens]`` (right
    padding) to float32 sentence embeddings ``[batch, dim * len(modes)]``, L2-normalised when the
    config says so."""
    hidden = hidden.astype(np.float32, copy=False)
    weights = mask.astype(np.float32)[:, :, None]
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    parts: list[np.ndarray] = []
    for mode in config.modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "mean":
            parts.append((hidden * weights).sum(axis=1) / counts)
        elif mode == "mean_sqrt_len":
            parts.append((hidden * weights).sum(axis=1) / np.sqrt(counts))
        elif mode == "max":
            parts.append(np.where(weights > 0, hidden, -np.inf).max(axis=1))
        elif mode == "weightedmean":
            ramp = np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            w = weights * ramp
            parts.append((hidden * w).sum(axis=1) / np.clip(w.sum(axis=1), 1e-9, None))
        elif mode == "lasttoken":
            last = mask.astype(np.int64).sum(axis=1) - 1
            parts.append(hidden[np.arange(hidden.shape[0]), last])
        else:  # pragma: no cover - read_pooling_config only yields known modes
            raise InvalidRequest(f"unknown pooling mode {mode!r}")
    pooled = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    if config.normalize:
        norms = np.linalg.norm(pooled, axis=-1, keepdims=True)
        pooled = pooled / np.clip(norms, 1e-12, None)
    return np.ascontiguousarray(pooled, dtype=np.float32)


@dataclass(frozen=True)
class EncoderHead:
    """The parts of an encoder that are not the network: tokenizer, limits, pooling."""

    tokenizer: Any  # a `tokenizers.Tokenizer` set to truncate once at load, then only read
    pooling: _hf.PoolingConfig
    max_length: int
    dimensions: int
    pad_token_id: int

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise InvalidRequest(f"input {i} is not a string", param="input")
        # The Rust tokenizer is configured once at load and then only read: safe across threads.
        encodings = self.tokenizer.encode_batch(items, add_special_tokens=True)
        return TokenizedBatch(ids=[list(e.ids) for e in encodings])

    def pad(self, batch: TokenizedBatch, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` as int64 ``[n, width]``, right-padded."""
        lengths = batch.lengths
        for i, n in enumerate(lengths):
            if n == 0:
                raise InvalidRequest(f"input {i} is empty", param="input")
            if n > self.max_length:
                raise InvalidRequest(
                    f"input {i} has {n} tokens; the most is {self.max_length}", param="input"
                )
        width = width or max(lengths)
        ids = np.full((len(lengths), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(lengths), width), dtype=np.int64)
        for i, row in enumerate(batch.ids):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def empty(self) -> np.ndarray:
        return np.zeros((0, self.dimensions), dtype=np.float32)


def load_head(path: Path, *, trust_remote_code: bool = False) -> EncoderHead:
    """Read a model directory's tokenizer, pooling config and limits."""
    config = _hf.require_model_dir(path)
    pooling = _hf.read_pooling_config(path)
    try:
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        raise ModelUnavailable(f"cannot load the tokenizer of {path}: {exc}") from exc
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelUnavailable(f"{path} has no fast tokenizer (tokenizer.json); this engine needs one")
    max_length = encoder_max_length(pooling, hf_tokenizer.model_max_length, config)
    # A private copy: transformers' wrapper re-configures the shared Rust object on calls.
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    hidden = int(pooling.word_embedding_dimension or config.get("hidden_size") or 0)
    if hidden <= 0:
        raise ModelUnavailable(f"{path}: cannot tell the embedding size (no hidden_size in config.json)")
    pad = hf_tokenizer.pad_token_id
    return EncoderHead(
        tokenizer=tokenizer,
        pooling=pooling,
        max_length=max_length,
        dimensions=hidden * pooling.dimensions_factor,
        pad_token_id=int(pad if pad is not None else 0),
    )


def encoder_max_length(pooling: _hf.PoolingConfig, model_max_length: int, config: dict[str, Any]) -> int:
    """The most tokens per input: the sentence-transformers limit, else the tokenizer's, never
    beyond the model's position embeddings."""
    limits = [int(config.get("max_position_embeddings") or 0)]
    if pooling.max_seq_length:
        limits.append(pooling.max_seq_length)
    elif 0 < model_max_length < 10**7:
        limits.append(int(model_max_length))
    limits = [x for x in limits if x > 0]
    return min(limits) if limits else 512
