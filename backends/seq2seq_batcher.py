"""Continuous batching for transformers encoder-decoder models (T5, BART, mBART, Marian, Pegasus).

``Seq2SeqBatcher`` is ``ContinuousBatcher`` with an encoder in front. Sequences join and leave
the running batch between steps exactly as in the causal batcher (same ``Turns``, same sampling,
penalties, logprobs and finish rules); what differs:

- a newcomer's *prefill* runs the encoder once over its input (newcomers together, right-padded,
  masked) and then the decoder's first step from the model's decoder start token; that step
  fills the newcomer's cross-attention keys and values, which are kept for the rest of its life;
- the decoder's self-attention cache is the causal batcher's ``BatchKVCache``: rows left-padded to
  the shared column clock, so a row that joins later simply starts at a later column;
- the cross-attention cache (``CrossCache``) holds every running row's encoder keys and values,
  right-padded to the longest encoder input among them, with a mask of the real positions;
- decoders with absolute positions (BART's learned ones, Marian's and Pegasus' sinusoids) read
  each row's own position (its column minus its start) through ``DecoderPositions``; T5's
  relative position bias is unchanged by a shift, so left padding leaves it exact.

So a row computes what it would alone, whatever joins or leaves around it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers.cache_utils import Cache, CacheLayerMixin, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from hfd.backends.base import FinishReason, SamplingParams, StepOutput
from hfd.backends.torch_batcher import ContinuousBatcher, _one, _Sequence, accept, new_sequence
from hfd.backends.torch_cache import BatchKVCache
from hfd.backends.torch_penalties import Penalties
from hfd.backends.torch_sampling import sample_with_logprobs
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable


class _CrossLayer(CacheLayerMixin):
    """One decoder layer's cross-attention keys and values: ``[rows, heads, encoder width, dim]``,
    exactly that wide (the attention reads the tensors whole once they are filled)."""

    is_sliding = False
    is_compileable = False

    def __init__(self) -> None:
        super().__init__()
        self.keys = None
        self.values = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else int(self.keys.shape[-2])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length(), 0

    def get_max_cache_shape(self) -> int:
        return -1


class CrossCache(Cache):
    """The running rows' cross-attention keys and values and their encoder masks."""

    def __init__(self, num_layers: int) -> None:
        self._cross: list[_CrossLayer] = [_CrossLayer() for _ in range(num_layers)]
        super().__init__(layers=list(self._cross))
        self.valid: torch.Tensor | None = None  # [rows, width] bool: real encoder positions

    @property
    def rows(self) -> int:
        return 0 if self.valid is None else int(self.valid.shape[0])

    def nbytes(self) -> int:
        return sum(
            int(la.keys.numel() * la.keys.element_size() * 2) for la in self._cross if la.keys is not None
        )

    def reset(self) -> None:
        for layer in self._cross:
            layer.keys = layer.values = None
        self.valid = None

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for layer in self._cross:
            if layer.keys is not None and layer.values is not None:
                layer.keys, layer.values = fn(layer.keys), fn(layer.values)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows``, in that order (a prefilled batch's survivors)."""
        assert self.valid is not None
        self._map(lambda t: t.index_select(0, rows))
        self.valid = self.valid.index_select(0, rows)

    def append(self, other: CrossCache) -> None:
        """Add ``other``'s rows as the last rows, both padded on the right to the wider width."""
        assert other.valid is not None
        if self.valid is None:
            self.valid = other.valid
            for mine, theirs in zip(self._cross, other._cross, strict=True):
                mine.keys, mine.values = theirs.keys, theirs.values
            return
        width = max(self.valid.shape[1], other.valid.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = width - t.shape[dim]
            if not extra:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t, t.new_zeros(shape)], dim=dim)

        for mine, theirs in zip(self._cross, other._cross, strict=True):
            if mine.keys is None or mine.values is None or theirs.keys is None or theirs.values is None:
                continue
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.valid = torch.cat([pad(self.valid, 1), pad(other.valid, 1)])

    def remove_row(self, row: int) -> None:
        """Drop ``row`` by moving the last row into its place (as ``BatchKVCache.remove_row``),
        then narrow the width to the longest encoder input left."""
        assert self.valid is not None
        last = self.rows - 1
        order = list(range(last))
        if row != last:
            order[row] = last
        index = torch.tensor(order, dtype=torch.long, device=self.valid.device)
        self.select(index)
        if not order:
            self.reset()
            return
        width = int(self.valid.any(0).nonzero().max()) + 1
        if width < self.valid.shape[1]:
            self._map(lambda t: t[:, :, :width].contiguous())
            self.valid = self.valid[:, :width].contiguous()


class DecoderPositions:
    """Each row's own decoder positions for decoders with absolute position embeddings.

    Their ``embed_positions`` is called with one shared offset (the cache length); while
    ``given`` is active it returns the embeddings of the positions given instead, one per row.
    A decoder with neither (T5's relative bias needs none) nor a ``position_ids`` argument cannot
    be batched and is refused at load.
    """

    def __init__(self, model: Any) -> None:
        self._given: torch.Tensor | None = None
        module = getattr(model.get_decoder(), "embed_positions", None)
        if module is None:
            if getattr(model.config, "relative_attention_num_buckets", None) is None:
                raise ModelUnavailable(
                    f"the torch seq2seq engine cannot batch the decoder positions of {model.config.model_type}"
                )
            return
        if "position_ids" not in inspect.signature(module.forward).parameters:
            raise ModelUnavailable(
                f"the torch seq2seq engine cannot give {model.config.model_type}'s decoder per-row positions"
            )
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            given = self._given
            if given is None:
                return original(*args, **kwargs)  # type: ignore[no-any-return]
            flat: torch.Tensor = original(args[0], 0, position_ids=given.reshape(-1))
            return flat.reshape(*given.shape, -1)

        module.forward = forward

    @contextmanager
    def given(self, positions: torch.Tensor) -> Iterator[None]:
        self._given = positions
        try:
            yield
        finally:
            self._given = None


class Seq2SeqBatcher(ContinuousBatcher):
    """The model-facing half of the seq2seq engine: token ids in, token ids out."""

    def __init__(
        self,
        model: Any,
        *,
        encoder_length: int,
        decoder_length: int,
        decoder_start: int,
        forced_bos: int | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model, context_length=encoder_length + decoder_length, logits_to_keep=False, **kwargs
        )
        self.encoder_length = encoder_length
        self.decoder_length = decoder_length
        self._decoder_start = decoder_start
        self._forced_bos = forced_bos
        self._encoder = model.get_encoder()
        self._positions = DecoderPositions(model)
        self._hidden = int(model.config.d_model)
        self._cross = CrossCache(self._num_layers)

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if seq_id in self._known:
            raise InvalidRequest(f"sequence {seq_id} is already running")
        # The encoder takes up to encoder_length tokens; the decoder has its own limit.
        seq = new_sequence(seq_id, prompt_ids, params, self.encoder_length + 1)
        if params.max_tokens > self.decoder_length:
            raise ContextLengthExceeded(
                f"max_tokens is {params.max_tokens}; this model's decoder generates at most "
                f"{self.decoder_length} tokens",
                param="max_tokens",
            )
        # Repetition counts the decoder's own tokens (its start token first), as transformers does.
        seq.penalties = Penalties.of(params, [self._decoder_start])
        self._queue.append(seq)
        self._known.add(seq_id)

    def cache_bytes(self) -> int:
        return super().cache_bytes() + self._cross.nbytes()

    def close(self) -> None:
        super().close()
        self._cross = CrossCache(self._num_layers)

    def _accept(self, seq: _Sequence, token: int) -> FinishReason | None:
        return accept(seq, token, self.eos_token_ids, len(seq.prompt) + self.decoder_length)

    # -- prefill: the encoder, then the decoder's first step -------------------------------------

    def _prefill(self, out: dict[int, StepOutput]) -> None:
        batch = self._admit()
        if not batch:
            return
        n = len(batch)
        prompts = [torch.tensor(seq.prompt, dtype=torch.long) for seq in batch]
        ids = pad_sequence(prompts, batch_first=True, padding_value=self.pad_token_id).to(self.device)
        lengths = torch.tensor([len(seq.prompt) for seq in batch], device=self.device)
        valid = torch.arange(ids.shape[1], device=self.device).unsqueeze(0) < lengths.unsqueeze(1)
        encoded = self._encoder(input_ids=ids, attention_mask=valid.long()).last_hidden_state

        cache = BatchKVCache(self._num_layers)
        cache.rows = n
        cross = CrossCache(self._num_layers)
        cross.valid = valid
        start = torch.full((n, 1), self._decoder_start, dtype=torch.long, device=self.device)
        zeros = torch.zeros((n, 1), dtype=torch.long, device=self.device)
        allowed = torch.ones((n, 1, 1, 1), dtype=torch.bool, device=self.device)
        logits = self._run(start, zeros, self._encode_mask(allowed, allowed, None), encoded, cache, cross)[
            :, -1, :
        ]
        cache.advance(1)
        if self._forced_bos is not None:  # mBART's target language, BART's <s>: forced, as generate does
            forced = torch.full_like(logits, float("-inf"))
            forced[:, self._forced_bos] = 0.0
            logits = forced

        tokens, lps = sample_with_logprobs(logits, [s.sampling() for s in batch], self._eos)
        keep: list[int] = []
        for i, (seq, token) in enumerate(zip(batch, tokens, strict=True)):
            finished = self._accept(seq, token)
            out[seq.seq_id] = StepOutput(seq.seq_id, [token], finished, _one(lps[i]))
            if finished is None:
                keep.append(i)
            else:
                self._known.discard(seq.seq_id)
        if keep:
            rows = torch.tensor(keep, dtype=torch.long, device=self.device)
            cross.select(rows)
            self._cross.append(cross)
            self._merge(cache, batch, torch.zeros(n, dtype=torch.long, device=self.device), keep)

    # -- decode: the causal batcher's step, with the cross-attention cache -----------------------

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: Any, cache: BatchKVCache, **_: Any
    ) -> torch.Tensor:
        valid = self._cross.valid
        assert valid is not None
        # The cross keys and values are cached: the encoder states are only read for their shape.
        dtype = next(self.model.parameters()).dtype
        shape = (valid.shape[0], valid.shape[1], self._hidden)
        states = torch.zeros((), dtype=dtype, device=self.device).expand(shape)
        return self._run(ids, positions, mask, states, cache, self._cross)

    def _run(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: Any,
        encoded: torch.Tensor,
        cache: BatchKVCache,
        cross: CrossCache,
    ) -> torch.Tensor:
        """``[rows, 1, vocab]`` logits of one decoder step over ``cache`` and ``cross``."""
        assert cross.valid is not None
        past = EncoderDecoderCache(cache, cross)  # cross already filled: its layers are reused
        cross_mask = cross.valid[:, None, None, :]
        with self._positions.given(positions):
            result = self.model(
                decoder_input_ids=ids,
                decoder_attention_mask=mask,
                attention_mask=self._encode_mask(cross_mask, cross_mask, None),
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded),  # type: ignore[arg-type]
                past_key_values=past,
                use_cache=True,
            )
        logits: torch.Tensor = result.logits[:, -1:, :]
        return logits

    def _remove_rows(self, rows: list[int]) -> None:
        for row in sorted(rows, reverse=True):  # the order ContinuousBatcher moves rows in
            self._cross.remove_row(row)
        super()._remove_rows(rows)

    def _maybe_trim(self) -> None:
        super()._maybe_trim()
        if not self._rows:
            self._cross.reset()
