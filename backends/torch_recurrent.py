"""Continuous batching for models whose cache holds recurrent state: Mamba-style state-space
models and hybrids that mix state-space (or convolution) layers with attention.

``BatchKVCache`` (``torch_cache``) gives every row a band of K/V columns that padding and the
mask keep apart. A state-space layer has no columns: its state after a padded prompt is the
state after the padding too, and there is no mask that undoes that. So these models never see
padding. Each sequence is prefilled alone (batch of one, its exact prompt) into transformers'
own cache for the model (``DynamicCache(config=...)``, which holds conv and SSM state in
``LinearAttentionLayer`` s and K/V in ``DynamicLayer`` s), exactly as ``generate()`` does.
Queued sequences with the same prompt one after another (a request's n choices) share one
prefill: the next ones start from copies of its cache and last logits.

Decoding then depends on the layout:

- **recurrent only** (every layer's cache is fixed-size state, e.g. Mamba): one token per row
  needs no mask and no positions, so the running rows' states are stacked in one batch cache
  and decode together, one forward pass per step. A joining row's state is concatenated in; a
  finished row is dropped with an index select (O(rows x state), no column clock).
- **hybrid** (state-space and attention layers): each row keeps its own cache; a decode step
  stacks them into one step cache (K/V left-padded to the longest row and masked, each row at
  its own positions, states concatenated), runs one forward pass and copies each row's part
  back: two copies of the rows' K/V per step instead of a forward pass per row. A model with a
  sliding-window layer (whose cache drops columns) decodes one row per forward pass.

Which layout a model has is read from the cache transformers builds for its config, never from
its name.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from hfd.backends.base import StepOutput
from hfd.backends.torch_rows import RowBatcher, _Sequence, record
from hfd.backends.torch_sampling import prompt_logprobs, sample_with_logprobs

log = logging.getLogger(__name__)

Layout = Literal["recurrent", "hybrid"]


def recurrent_layout(model: Any) -> Layout | None:
    """``None`` for a plain K/V-cache model (the batched path), else how its state is kept."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, LinearAttentionCacheLayerMixin

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config DynamicCache cannot read: treat as plain attention
        return None
    states = [isinstance(layer, LinearAttentionCacheLayerMixin) for layer in layers]
    if not any(states):
        return None
    attention = any(isinstance(layer, DynamicLayer) for layer in layers)
    return "hybrid" if attention else "recurrent"


@dataclass
class _Row:
    seq: _Sequence
    cache: Any = None  # hybrid layout: this row's own cache


class RecurrentBatcher(RowBatcher):
    """The ``ContinuousBatcher`` interface (add, cancel, step, has_work, cache_bytes, close) for
    models with recurrent state; see the module docstring for how a step runs."""

    def __init__(self, model: Any, *, layout: Layout, **rows: Any) -> None:
        # rows: RowBatcher's (device, context_length, eos_token_ids, max_running, max_batched_tokens)
        super().__init__(model, **rows)
        self.layout = layout
        params = inspect.signature(model.forward).parameters
        # Mamba-family models name their cache argument ``cache_params``.
        self._cache_arg = "past_key_values" if "past_key_values" in params else "cache_params"
        self._logits_to_keep = "logits_to_keep" in params
        self._rows: list[_Row] = []
        self._batch: Any = None  # recurrent layout: the running rows' stacked states
        # Hybrid rows decode in one stacked pass unless a layer keeps a sliding window (its
        # cache drops columns, so rows' K/V would not line up); then one pass per row.
        self._stackable = layout == "hybrid" and _plain_attention(self._new_cache())

    # -- the GenerationModel calls (add, cancel, has_work, step: RowBatcher) -----------------

    def _cancel_running(self, seq_id: int) -> None:
        for i, row in enumerate(self._rows):
            if row.seq.seq_id == seq_id:
                self._remove([i])
                return

    def cache_bytes(self) -> int:
        caches = [self._batch] if self.layout == "recurrent" else [r.cache for r in self._rows]
        return sum(_cache_nbytes(c) for c in caches if c is not None)

    def close(self) -> None:
        self._reset_queue()
        self._rows.clear()
        self._batch = None

    # -- steps -----------------------------------------------------------------------------------

    def _prefill(self, out: dict[int, StepOutput]) -> None:
        budget = self.max_batched_tokens
        first = True
        shared: tuple[list[int], int | None, torch.Tensor, Any] | None = None  # prompt, echo, logits, cache
        while self._queue and len(self._rows) < self.max_running:
            seq = self._queue[0]
            # A row whose prompt was just prefilled (a request's n choices) starts from a copy of
            # that prefill's state and logits: no forward pass, no tokens from the budget.
            again = shared is not None and shared[:2] == (seq.prompt, seq.params.prompt_logprobs)
            if not first and not again and len(seq.prompt) > budget:
                break
            self._queue.popleft()
            first = False
            echo = seq.params.prompt_logprobs
            if shared is not None and again:
                every, cache = shared[2].clone(), copy.deepcopy(shared[3])
            else:
                budget -= len(seq.prompt)
                cache = self._new_cache()
                self.prefilled_tokens += len(seq.prompt)
                ids = torch.tensor([seq.prompt], dtype=torch.long, device=self.device)
                every = self._forward(ids, cache, every_position=echo is not None)
                nxt = self._queue[0] if self._queue else None
                same = nxt is not None and nxt.prompt == seq.prompt and nxt.params.prompt_logprobs == echo
                # Sampling and the running batch change the logits and the cache in place: keep
                # copies for the next rows.
                shared = (seq.prompt, echo, every.clone(), copy.deepcopy(cache)) if same else None
            prompt_lps = None if echo is None else prompt_logprobs(every[0], seq.prompt, echo)
            tokens, lps = sample_with_logprobs(every[:, -1, :], [seq.sampling()], self._eos)
            echoed = None if prompt_lps is None else {0: prompt_lps}
            if record(out, [seq], tokens, lps, self._accept, self._known, echoed):
                continue  # it ended on its first token
            if self.layout == "recurrent":
                self._batch = cache if self._batch is None else _concat_states(self._batch, cache)
                self._rows.append(_Row(seq))
            else:
                self._rows.append(_Row(seq, cache))

    def _decode(self, out: dict[int, StepOutput]) -> None:
        rows = self._rows
        if self.layout == "recurrent":
            ids = torch.tensor([[r.seq.last_token] for r in rows], dtype=torch.long, device=self.device)
            logits = self._forward(ids, self._batch)[:, -1, :]
        elif len(rows) > 1 and self._stackable:
            logits = self._decode_stacked(rows)
        else:
            one = [torch.tensor([[r.seq.last_token]], dtype=torch.long, device=self.device) for r in rows]
            logits = torch.cat(
                [self._forward(ids, r.cache)[:, -1, :] for ids, r in zip(one, rows, strict=True)]
            )
        tokens, lps = sample_with_logprobs(logits, [r.seq.sampling() for r in rows], self._eos)
        done = record(out, [r.seq for r in rows], tokens, lps, self._accept, self._known)
        if done:
            self._remove(done)

    def _decode_stacked(self, rows: list[_Row]) -> torch.Tensor:
        """One forward pass for every hybrid row: the rows' caches are stacked into one for the
        step (K/V left-padded to the longest row and masked, states concatenated), and each
        row's updated part is copied back into its own cache afterwards."""
        caches = [r.cache for r in rows]
        lengths = [int(c.get_seq_length()) for c in caches]
        width = max(lengths)
        batch = self._new_cache()
        for idx, layer in enumerate(batch.layers):
            _stack_layer(layer, [c.layers[idx] for c in caches], lengths, width)
        mask = torch.zeros((len(rows), width + 1), dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            mask[i, width - n :] = 1
        ids = torch.tensor([[r.seq.last_token] for r in rows], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": torch.tensor(lengths, dtype=torch.long, device=self.device).unsqueeze(1),
            self._cache_arg: batch,
            "use_cache": True,
        }
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        logits: torch.Tensor = self.model(**kwargs).logits[:, -1, :]
        for idx, layer in enumerate(batch.layers):
            _unstack_layer(layer, [c.layers[idx] for c in caches], lengths, width + 1)
        return logits

    # -- shared ----------------------------------------------------------------------------------

    def _new_cache(self) -> Any:
        from transformers.cache_utils import DynamicCache

        return DynamicCache(config=self.model.config)

    def _forward(self, ids: torch.Tensor, cache: Any, *, every_position: bool = False) -> torch.Tensor:
        """``[rows, positions, vocab]`` logits: the last position only unless ``every_position``."""
        # No mask and no positions: a row is never padded, so the model's own defaults (all
        # tokens valid, positions continuing from the cache) are exactly right.
        kwargs: dict[str, Any] = {"input_ids": ids, self._cache_arg: cache, "use_cache": True}
        if self._logits_to_keep and not every_position:
            kwargs["logits_to_keep"] = 1
        logits: torch.Tensor = self.model(**kwargs).logits
        return logits if every_position else logits[:, -1:, :]

    def _remove(self, rows: list[int]) -> None:
        gone = set(rows)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        if self.layout == "recurrent":
            if not keep:
                self._batch = None
            else:
                self._batch.reorder_cache(torch.tensor(keep, dtype=torch.long, device=self.device))


def _concat_states(batch: Any, new: Any) -> Any:
    """Append ``new``'s rows (fixed-size conv/SSM states) to ``batch``, layer by layer."""
    for mine, theirs in zip(batch.layers, new.layers, strict=True):
        for name, flag in (("conv_states", "is_conv_states_initialized"),
                           ("recurrent_states", "is_recurrent_states_initialized")):  # fmt: skip
            a, b = getattr(mine, name, None), getattr(theirs, name, None)
            if getattr(theirs, flag, False) and b is not None:
                setattr(mine, name, b.clone() if a is None else torch.cat([a, b], dim=0))
                setattr(mine, flag, True)
        if getattr(mine, "is_conv_states_initialized", False):
            mine.max_batch_size = mine.conv_states.shape[0]
    return batch


def _cache_nbytes(cache: Any) -> int:
    total = 0
    for layer in cache.layers:
        for name in ("conv_states", "recurrent_states", "keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


_STATES = (
    ("conv_states", "is_conv_states_initialized"),
    ("recurrent_states", "is_recurrent_states_initialized"),
)


def _plain_attention(cache: Any) -> bool:
    """Whether every attention layer of this cache is a plain ``DynamicLayer`` (no window)."""
    from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin

    return all(
        isinstance(la, LinearAttentionCacheLayerMixin) or type(la) is DynamicLayer for la in cache.layers
    )


def _stack_layer(layer: Any, parts: list[Any], lengths: list[int], width: int) -> None:
    """Fill one layer of a fresh step cache from the rows' layers (see ``_decode_stacked``)."""
    for name, flag in _STATES:
        if parts and all(getattr(p, flag, False) for p in parts):
            state = torch.cat([getattr(p, name) for p in parts], dim=0)
            setattr(layer, name, state)
            setattr(layer, flag, True)
            layer.has_previous_state = True
            layer.dtype, layer.device = state.dtype, state.device
            if name == "conv_states":
                layer.max_batch_size, layer.conv_kernel_size = state.shape[0], state.shape[-1]
    if parts and all(
        getattr(p, "is_initialized", False) and getattr(p, "keys", None) is not None for p in parts
    ):
        k0, v0 = parts[0].keys, parts[0].values
        keys = k0.new_zeros((len(parts), k0.shape[1], width, k0.shape[3]))
        values = v0.new_zeros((len(parts), v0.shape[1], width, v0.shape[3]))
        for i, (p, n) in enumerate(zip(parts, lengths, strict=True)):
            keys[i, :, width - n :] = p.keys[0]
            values[i, :, width - n :] = p.values[0]
        layer.keys, layer.values = keys, values
        layer.dtype, layer.device = k0.dtype, k0.device
        layer.is_initialized = True


def _unstack_layer(layer: Any, parts: list[Any], lengths: list[int], width: int) -> None:
    """Copy each row's part of a step cache layer (``width`` columns now) back into its own."""
    for name, flag in _STATES:
        if getattr(layer, flag, False):
            full = getattr(layer, name)
            for i, p in enumerate(parts):
                setattr(p, name, full[i : i + 1].clone())
    if getattr(layer, "is_initialized", False) and getattr(layer, "keys", None) is not None:
        for i, (p, n) in enumerate(zip(parts, lengths, strict=True)):
            p.keys = layer.keys[i : i + 1, :, width - n - 1 :].clone()
            p.values = layer.values[i : i + 1, :, width - n - 1 :].clone()
