"""Sentence embeddings with a transformers encoder, pooled as sentence-transformers would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hfd.backends.base import TokenizedBatch
from hfd.backends.numpy_encoder import EncoderHead
from hfd.backends.st_config import Dense, PoolingConfig
from hfd.client.errors import InvalidRequest


def pool(hidden: torch.Tensor, mask: torch.Tensor, config: PoolingConfig) -> torch.Tensor:
    """Token embeddings ``[batch, tokens, dim]`` and a 0/1 mask ``[batch, tokens]`` (right padding)
    to sentence embeddings: the pooling modes concatenated, then the folder's Dense and Normalize
    modules in order."""
    hidden = hidden.float()
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    parts: list[torch.Tensor] = []
    for mode in config.modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "mean":
            parts.append((hidden * weights).sum(dim=1) / counts)
        elif mode == "mean_sqrt_len":
            parts.append((hidden * weights).sum(dim=1) / counts.sqrt())
        elif mode == "max":
            parts.append(hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values)
        elif mode == "weightedmean":
            ramp = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
            w = weights * ramp.view(1, -1, 1)
            parts.append((hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = mask.long().sum(dim=1) - 1
            parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        else:  # pragma: no cover - read_pooling_config only yields known modes
            raise InvalidRequest(f"unknown pooling mode {mode!r}")
    pooled = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    for step in config.steps:
        if isinstance(step, Dense):
            pooled = dense(pooled, step)
        else:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
    return pooled


_ACTIVATIONS: dict[str, Any] = {
    "Identity": lambda y: y,
    "Tanh": torch.tanh,
    "ReLU": torch.relu,
    "GELU": torch.nn.functional.gelu,
    "Sigmoid": torch.sigmoid,
    "SiLU": torch.nn.functional.silu,
}


def dense(x: torch.Tensor, step: Dense) -> torch.Tensor:
    """A sentence-transformers Dense module: ``activation(x W^T + b)``, plus the residual."""

    def tensor(a: Any) -> torch.Tensor:
        return torch.from_numpy(a).to(device=x.device, dtype=x.dtype)

    bias = tensor(step.bias) if step.bias is not None else None
    y = _ACTIVATIONS[step.activation](torch.nn.functional.linear(x, tensor(step.weight), bias))
    if step.use_residual:
        y = y + (x if step.residual is None else torch.nn.functional.linear(x, tensor(step.residual)))
    return y


class _OnDevice:
    """A transformers module on a device: its size, and letting it go."""

    model: Any
    _device: torch.device

    def memory_bytes(self) -> int:
        return module_bytes(self.model)

    def close(self) -> None:
        self.model = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


class TorchEncoder(_OnDevice):
    """An ``EncoderModel``: tokenize on any thread, ``embed`` on the model's worker thread.
    Tokenizing, the length checks and the padding are the other engines' (``EncoderHead``)."""

    name = "torch"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: torch.device,
        pooling: PoolingConfig,
        max_length: int,
        dimensions: int,
        pad_token_id: int,
        uses_token_types: bool,
    ) -> None:
        self.model = model
        self.device = str(device)
        self._device = device
        # The tokenizer is set to truncate at load and then only read: safe across threads.
        self._head = EncoderHead(tokenizer, pooling, max_length, dimensions, pad_token_id)
        self.max_length = max_length
        self.dimensions = dimensions
        self._token_types = uses_token_types

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        return self._head.tokenize(texts)

    @torch.inference_mode()
    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        if not batch.ids:
            return self._head.empty()
        ids, mask = (torch.from_numpy(a).to(self._device) for a in self._head.pad(batch))
        inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            inputs["token_type_ids"] = torch.zeros_like(ids)
        hidden = self.model(**inputs).last_hidden_state
        pooled = pool(hidden, mask, self._head.pooling)
        return pooled.to("cpu", torch.float32).numpy()


def module_bytes(model: Any) -> int:
    if model is None:
        return 0
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        total += t.numel() * t.element_size()
    return int(total)


class TorchHead(_OnDevice):
    """An ``EncoderModel`` over a classification head (``hfd.backends.heads``): ``embed``
    returns the head's float32 logits, ``(n, labels)`` or ``(n, tokens, labels)``."""

    name = "torch"

    def __init__(
        self, model: Any, tokenizer: Any, head: Any, *, device: torch.device, uses_token_types: bool
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer  # hfd.backends.heads.HeadTokenizer
        self.head = head  # hfd.backends.heads.HeadConfig
        self.device = str(device)
        self._device = device
        self.max_length = int(tokenizer.max_length)
        self.dimensions = head.num_labels
        self._token_types = uses_token_types

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        result: TokenizedBatch = self.tokenizer.tokenize(texts)
        return result

    @torch.inference_mode()
    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        from hfd.backends.heads import check_lengths, pad_batch

        check_lengths(batch, self.max_length)
        ids, mask, types = (torch.from_numpy(a) for a in pad_batch(batch, self.tokenizer.pad_token_id))
        inputs: dict[str, torch.Tensor] = {
            "input_ids": ids.to(self._device),
            "attention_mask": mask.to(self._device),
        }
        if self._token_types:
            inputs["token_type_ids"] = types.to(self._device)
        logits = self.model(**inputs).logits
        out: np.ndarray = logits.to("cpu", torch.float32).numpy()
        return out


def load_head(opts: Any) -> TorchHead:
    """A sequence- or token-classification head for ``opts.task`` (rerank, classify,
    token-classify), with transformers' ``AutoModelFor*Classification``."""
    import inspect

    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from hfd.backends import _hf
    from hfd.backends.heads import HEAD_OF_TASK, HeadTokenizer, head_config
    from hfd.backends.torch_backend import _from_pretrained, _prepare

    kind = HEAD_OF_TASK.get(opts.task)
    if kind is None:
        raise InvalidRequest(f"the torch engine has no head for task {opts.task!r}", param="task")
    config = _hf.require_model_dir(opts.path)
    device, dtype = _prepare(opts)
    auto = AutoModelForTokenClassification if kind == "token" else AutoModelForSequenceClassification
    model = _from_pretrained(auto, opts, device, dtype)
    limit = _hf.max_positions(model.config) or 512
    tokenizer = HeadTokenizer.from_path(opts.path, max_length=limit, trust_remote_code=opts.trust_remote_code)
    return TorchHead(
        model,
        tokenizer,
        head_config(config, kind),
        device=device,
        uses_token_types="token_type_ids" in inspect.signature(model.forward).parameters,
    )
