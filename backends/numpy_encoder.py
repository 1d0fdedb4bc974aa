"""Tokenize, pad and pool for encoder engines that run outside torch (OpenVINO, ONNX Runtime).

The engine itself only maps padded ``input_ids``/``attention_mask`` arrays to token embeddings;
everything around it is here, in numpy, with the same semantics as sentence-transformers (and as
the torch engine), so embeddings agree across engines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from hfd.backends import _hf
from hfd.backends.base import TokenizedBatch
from hfd.backends.st_config import Dense, PoolingConfig, read_pooling_config
from hfd.backends.tokenizer_facts import tokenizer_facts
from hfd.client.errors import InvalidRequest, ModelUnavailable

# The inputs an encoder graph may name; ``encoder_feeds`` fills each of them.
ENCODER_INPUTS: Final = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids"})


def encoder_feeds(names: Iterable[str], ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """An exported encoder's inputs by name, from right-padded ``ids`` and ``mask``: one segment
    (token types all zero) and positions from 0. Names outside ``ENCODER_INPUTS`` are left out."""
    feeds: dict[str, np.ndarray] = {}
    for name in names:
        if name == "input_ids":
            feeds[name] = ids
        elif name == "attention_mask":
            feeds[name] = mask
        elif name == "token_type_ids":
            feeds[name] = np.zeros_like(ids)
        elif name == "position_ids":
            feeds[name] = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
    return feeds


def pool(hidden: np.ndarray, mask: np.ndarray, config: PoolingConfig) -> np.ndarray:
    """Token embeddings ``[batch, tokens, dim]`` and a 0/1 mask ``[batch, tokens]`` (right
    padding) to float32 sentence embeddings: the pooling modes concatenated, then the folder's
    Dense and Normalize modules in order."""
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
    for step in config.steps:
        if isinstance(step, Dense):
            pooled = dense(pooled, step)
        else:
            norms = np.linalg.norm(pooled, axis=-1, keepdims=True)
            pooled = pooled / np.clip(norms, 1e-12, None)
    return np.ascontiguousarray(pooled, dtype=np.float32)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def dense(x: np.ndarray, step: Dense) -> np.ndarray:
    """A sentence-transformers Dense module: ``activation(x W^T + b)``, plus the residual."""
    y = x @ step.weight.T
    if step.bias is not None:
        y = y + step.bias
    if step.activation == "Tanh":
        y = np.tanh(y)
    elif step.activation == "ReLU":
        y = np.maximum(y, 0)
    elif step.activation == "GELU":  # torch's default GELU is the exact (erf) one
        y = 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)))
    elif step.activation == "Sigmoid":
        y = 1.0 / (1.0 + np.exp(-y))
    elif step.activation == "SiLU":
        y = y / (1.0 + np.exp(-y))
    if step.use_residual:
        y = y + (x if step.residual is None else x @ step.residual.T)
    return y.astype(np.float32)


@dataclass(frozen=True)
class EncoderHead:
    """The parts of an encoder that are not the network: tokenizer, limits, pooling."""

    tokenizer: Any  # a `tokenizers.Tokenizer` set to truncate once at load, then only read
    pooling: PoolingConfig
    max_length: int
    dimensions: int
    pad_token_id: int

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise InvalidRequest(f"input {i} is not a string", param="input")
        if self.pooling.lowercase:  # sentence_bert_config's do_lower_case
            items = [text.lower() for text in items]
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


class GraphEncoder:
    """What the encoders over an exported graph (ONNX Runtime, OpenVINO) share: the head's
    tokenizer, limits and pooling, and which of the graph's inputs and outputs they use."""

    def __init__(self, head: EncoderHead, device: str) -> None:
        self.device = device
        self._head = head
        self.max_length = head.max_length
        self.dimensions = head.dimensions
        self._inputs: list[str] = []
        self._output = ""

    def _ports(self, graph: Path, inputs: list[str], outputs: list[str]) -> None:
        """The graph's inputs (``ModelUnavailable`` for one no encoder has) and the output that
        holds its token embeddings."""
        unknown = set(inputs) - ENCODER_INPUTS
        if unknown:
            raise ModelUnavailable(f"{graph}: unexpected encoder inputs {sorted(unknown)}")
        self._inputs = inputs
        self._output = next(
            (n for n in ("last_hidden_state", "token_embeddings") if n in outputs), outputs[0]
        )

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        return self._head.tokenize(texts)


def load_head(path: Path, *, trust_remote_code: bool = False, cache_dir: Path | None = None) -> EncoderHead:
    """Read a model directory's tokenizer, pooling config and limits (what transformers reads of
    them is recorded under ``cache_dir`` and read from there next time: ``tokenizer_facts``)."""
    _hf.require_model_dir(path)
    pooling = read_pooling_config(path)
    facts = tokenizer_facts(
        path,
        trust_remote_code=trust_remote_code,
        cache_dir=cache_dir,
        config=True,
        needed="this engine needs one",
    )
    tokenizer = facts.rust_tokenizer()
    max_length = encoder_max_length(pooling, facts.model_max_length, facts.max_positions)
    tokenizer.enable_truncation(max_length=max_length)
    hidden = pooling.word_embedding_dimension or facts.hidden_size
    if hidden <= 0:
        raise ModelUnavailable(f"{path}: cannot tell the embedding size (the config has no hidden size)")
    pad = facts.pad_token_id
    return EncoderHead(
        tokenizer=tokenizer,
        pooling=pooling,
        max_length=max_length,
        dimensions=pooling.output_dimensions(hidden),
        pad_token_id=int(pad if pad is not None else 0),
    )


def encoder_max_length(pooling: PoolingConfig, model_max_length: int, max_positions: int) -> int:
    """The most tokens per input: the sentence-transformers limit, else the tokenizer's, never
    beyond the model's position embeddings."""
    limits = [max_positions]
    if pooling.max_seq_length:
        limits.append(pooling.max_seq_length)
    elif 0 < model_max_length < 10**7:
        limits.append(int(model_max_length))
    limits = [x for x in limits if x > 0]
    return min(limits) if limits else 512
