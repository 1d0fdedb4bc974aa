"""The key/value cache of a running batch, for continuous batching with transformers models.

Every layer keeps one preallocated buffer per K and V, shaped ``[rows, kv_heads, columns, head_dim]``.
All rows share the column clock: a decoding step writes column ``length`` for every row. Each
row's tokens are contiguous and end at ``length``; the columns to their left are padding, which
the attention mask hides (the engine tracks where each row starts). That layout is what lets
rows join and leave between steps without touching the others:

- a new row is copied in right-aligned (its prompt ends at ``length``); when its prompt is longer
  than ``length``, every running row shifts right once;
- a finished row is replaced by the last row (one row's copy, not a compaction of the batch);
- columns that are padding in every row are trimmed from the left now and then, so the buffers
  do not grow without bound as sequences come and go.

Buffers grow geometrically and are written in place: a step costs no re-concatenation of the
whole cache, unlike ``DynamicCache``. Buffers start zeroed and padding columns only ever hold
finite values, so a masked column can never turn an attention output into NaN (0 * NaN).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

# Column capacity grows by at least this much (and by half the current size), so reallocation
# (a copy of the cache) happens O(log n) times per sequence length.
_COLUMN_STEP = 64


class _BatchLayer(CacheLayerMixin):
    """One layer's K/V buffers; the shared clock (rows, length) lives in the owning cache."""

    is_sliding = False
    is_compileable = False

    def __init__(self, owner: BatchKVCache) -> None:
        super().__init__()
        self.owner = owner
        self.keys = None
        self.values = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def _reserve(self, like_k: torch.Tensor, like_v: torch.Tensor, rows: int, cols: int) -> None:
        keys, values = self.keys, self.values
        if keys is not None and values is not None and keys.shape[0] >= rows and keys.shape[2] >= cols:
            return
        old_rows = keys.shape[0] if keys is not None else 0
        old_cols = keys.shape[2] if keys is not None else 0
        # Rows double (up to the batch limit) so that sequences joining one by one do not
        # each cost a copy of the whole cache.
        new_rows = max(rows, min(old_rows * 2, self.owner.row_limit)) if rows > old_rows else old_rows
        new_cols = max(cols, old_cols + max(_COLUMN_STEP, old_cols // 2)) if cols > old_cols else old_cols
        kb = like_k.new_zeros((new_rows, like_k.shape[1], new_cols, like_k.shape[3]))
        vb = like_v.new_zeros((new_rows, like_v.shape[1], new_cols, like_v.shape[3]))
        live_rows, live_cols = self.owner.rows_in_use, self.owner.length
        if keys is not None and values is not None and live_rows and live_cols:
            kb[:live_rows, :, :live_cols] = keys[:live_rows, :, :live_cols]
            vb[:live_rows, :, :live_cols] = values[:live_rows, :, :live_cols]
        self.keys, self.values = kb, vb

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows = key_states.shape[0]
        start = self.owner.length
        end = start + key_states.shape[-2]
        self._reserve(key_states, value_states, max(rows, self.owner.rows), end)
        assert self.keys is not None and self.values is not None
        self.keys[:rows, :, start:end] = key_states
        self.values[:rows, :, start:end] = value_states
        return self.keys[:rows, :, :end], self.values[:rows, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.length

    def get_max_cache_shape(self) -> int:
        return -1

    def nbytes(self) -> int:
        if self.keys is None or self.values is None:
            return 0
        return int(self.keys.numel() * self.keys.element_size() * 2)


class BatchKVCache(Cache):
    """A transformers ``Cache`` for a batch whose rows change between forward passes.

    The model's forward writes the new columns through ``update``; the engine then calls
    ``advance(q)`` to move the clock. ``rows`` is the batch size of the next forward pass.
    """

    def __init__(self, num_layers: int, row_limit: int = 0) -> None:
        self.row_limit = row_limit  # most rows the batch will hold; 0: exactly what is asked
        self._layers: list[_BatchLayer] = [_BatchLayer(self) for _ in range(num_layers)]
        super().__init__(layers=list(self._layers))
        self.rows = 0
        self.length = 0

    @property
    def rows_in_use(self) -> int:
        return self.rows

    def advance(self, columns: int) -> None:
        self.length += columns

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self._layers)

    def _buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(la.keys, la.values) for la in self._layers if la.keys is not None and la.values is not None]

    def reset(self) -> None:
        """Forget every row (buffers are kept for reuse)."""
        self.rows = 0
        self.length = 0

    def remove_row(self, row: int) -> int | None:
        """Drop ``row`` by moving the last row into its place; returns the moved row's old index."""
        last = self.rows - 1
        moved: int | None = None
        if row != last:
            for keys, values in self._buffers():
                keys[row, :, : self.length] = keys[last, :, : self.length]
                values[row, :, : self.length] = values[last, :, : self.length]
            moved = last
        self.rows -= 1
        if self.rows == 0:
            self.length = 0
        return moved

    def shift_right(self, by: int) -> None:
        """Move every row's columns ``by`` to the right (new padding on the left)."""
        if by <= 0:
            return
        new_length = self.length + by
        for layer in self._layers:
            if layer.keys is None or layer.values is None:
                continue
            layer._reserve(layer.keys, layer.values, self.rows, new_length)
            keys, values = layer.keys, layer.values
            assert keys is not None and values is not None
            if self.rows and self.length:
                keys[: self.rows, :, by:new_length] = keys[: self.rows, :, : self.length].clone()
                values[: self.rows, :, by:new_length] = values[: self.rows, :, : self.length].clone()
                keys[: self.rows, :, :by].zero_()
                values[: self.rows, :, :by].zero_()
        self.length = new_length

    def trim_left(self, by: int) -> None:
        """Drop the first ``by`` columns of every row (they must be padding in all rows)."""
        if by <= 0:
            return
        keep = self.length - by
        for keys, values in self._buffers():
            if self.rows and keep:
                keys[: self.rows, :, :keep] = keys[: self.rows, :, by : self.length].clone()
                values[: self.rows, :, :keep] = values[: self.rows, :, by : self.length].clone()
        self.length = keep

    def append_rows(self, other: BatchKVCache, rows: torch.Tensor) -> None:
        """Copy rows ``rows`` of ``other`` (a prefilled batch) in as new last rows, right-aligned.

        The caller has made ``self.length >= other.length`` (``shift_right``) first.
        """
        n = int(rows.numel())
        if n == 0:
            return
        if self.length < other.length:
            raise ValueError("shift the running batch right before appending longer rows")
        start = self.length - other.length
        first = self.rows
        for mine, theirs in zip(self._layers, other._layers, strict=True):
            if theirs.keys is None or theirs.values is None:
                continue
            if not mine.is_initialized:
                mine.lazy_initialization(theirs.keys, theirs.values)
            mine._reserve(theirs.keys, theirs.values, first + n, max(self.length, 1))
            assert mine.keys is not None and mine.values is not None
            src_k = theirs.keys.index_select(0, rows)[:, :, : other.length]
            src_v = theirs.values.index_select(0, rows)[:, :, : other.length]
            mine.keys[first : first + n, :, start : self.length] = src_k
            mine.values[first : first + n, :, start : self.length] = src_v
            if start:
                # Stale values of departed rows may sit there; zero keeps them finite and tidy.
                mine.keys[first : first + n, :, :start].zero_()
                mine.values[first : first + n, :, :start].zero_()
        self.rows += n

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (in that order): used on a freshly prefilled batch."""
        n = int(rows.numel())
        if n == self.rows and bool((rows == torch.arange(n, device=rows.device)).all()):
            return
        for layer in self._layers:
            if layer.keys is None or layer.values is None:
                continue
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)
        self.rows = n
        if n == 0:
            self.length = 0

    # -- prefix reuse (``torch_prefix``) ---------------------------------------------------------

    def row_columns(self, row: int, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of row ``row``'s columns ``[start, end)`` per layer, ``[kv_heads, n, head_dim]``."""
        return [(k[row, :, start:end].clone(), v[row, :, start:end].clone()) for k, v in self._buffers()]

    def load_prefixes(
        self,
        rows: int,
        past: int,
        width: int,
        prefixes: list[tuple[int, list[tuple[torch.Tensor, torch.Tensor]], int]],
    ) -> None:
        """Make a fresh prefill cache of ``rows`` rows whose first ``past`` columns hold, for each
        ``(row, layers, n)``, the first ``n`` kept columns right-aligned at ``past``; room is made
        for ``width`` more columns (the prefill's queries)."""
        for index, layer in enumerate(self._layers):
            like_k, like_v = prefixes[0][1][index]
            like_k, like_v = like_k.unsqueeze(0), like_v.unsqueeze(0)
            layer.lazy_initialization(like_k, like_v)
            layer._reserve(like_k, like_v, rows, past + width)
            assert layer.keys is not None and layer.values is not None
            for row, kept, n in prefixes:
                k, v = kept[index]
                layer.keys[row, :, past - n : past] = k[:, :n]
                layer.values[row, :, past - n : past] = v[:, :n]
        self.rows = rows
        self.length = past

    def close_gaps(self, past: int, moves: list[tuple[int, int, int]]) -> None:
        """For each ``(row, n, gap)``: move that row's ``n`` columns ending at ``past`` right by
        ``gap``, onto the padding left between them and the row's prefilled tokens."""
        for keys, values in self._buffers():
            for row, n, gap in moves:
                keys[row, :, past - n + gap : past + gap] = keys[row, :, past - n : past].clone()
                values[row, :, past - n + gap : past + gap] = values[row, :, past - n : past].clone()
