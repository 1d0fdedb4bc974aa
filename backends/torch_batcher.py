"""Step-wise continuous batching for a transformers causal LM.

One running batch shares a ``BatchKVCache``. ``step()``:

1. prefills queued sequences together (left-padded, up to ``max_batched_tokens`` padded prompt
   tokens and ``max_running`` rows in all; rows with the same prompt, a request's n choices,
   share one prefilled row and its logits; a prompt that starts with a kept prefix, a chat's
   earlier turns, prefills only the rest: ``torch_prefix``) and samples each one's first token;
2. moves the survivors' cache rows into the running batch, right-aligned;
3. decodes one token for every running row in a single forward pass.

Every row's tokens are contiguous and end at the shared column ``length``; row ``r`` starts at
column ``start[r]`` and the token in column ``j`` has position ``j - start[r]``. So a row computes
exactly what it would alone (same positions, padding masked), whatever joins or leaves around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from hfd.backends.base import StepOutput
from hfd.backends.logprobs import TokenLogprob
from hfd.backends.torch_cache import BatchKVCache
from hfd.backends.torch_prefix import PrefixEntry, PrefixStore
from hfd.backends.torch_rows import RowBatcher, Turns, _one, _Sequence, accept, new_sequence, record
from hfd.backends.torch_sampling import prompt_logprobs, sample_with_logprobs

# The rows' helpers, where the engines built on this batcher import them from.
__all__ = ["ContinuousBatcher", "MaskPlan", "Turns", "_Sequence", "_one", "accept", "new_sequence"]

log = logging.getLogger(__name__)

# Trim the all-padding columns on the left once they are this many (and a quarter of the cache):
# often enough to bound memory, rarely enough that the copy is amortised.
_TRIM_MIN_COLUMNS = 32


@dataclass(frozen=True)
class MaskPlan:
    """How this model wants its attention mask: one tensor, or one per layer type."""

    window: int | None  # sliding window for a single-tensor mask
    layer_windows: dict[str, int | None] | None  # layer type -> window, for hybrid models
    boolean: bool  # SDPA takes a boolean mask; eager attention an additive float one


class ContinuousBatcher(RowBatcher):
    """The model-facing half of ``TorchGenerator``: the queue, the running batch, its cache and
    the steps. Token ids in, token ids out; no tokenizer here."""

    def __init__(
        self,
        model: Any,
        *,
        pad_token_id: int,
        mask_plan: MaskPlan,
        num_layers: int,
        logits_to_keep: bool,
        prefixes: PrefixStore | None = None,  # kept K/V of finished sequences (None: no reuse)
        **rows: Any,  # RowBatcher's: device, context_length, eos_token_ids, max_running, ...
    ) -> None:
        super().__init__(model, **rows)
        self.prefixes = prefixes
        self._hits: dict[tuple[int, ...], tuple[PrefixEntry, int]] = {}  # this prefill's reuse
        self.pad_token_id = pad_token_id
        self._mask_plan = mask_plan
        self._num_layers = num_layers
        self._logits_to_keep = logits_to_keep
        self._rows: list[_Sequence] = []  # running rows, in cache row order
        self._start = torch.zeros(0, dtype=torch.long, device=self.device)  # per row: first column
        self._cache = BatchKVCache(num_layers, row_limit=self.max_running)

    # -- the GenerationModel calls (add, cancel, has_work, step: RowBatcher) -----------------

    def _cancel_running(self, seq_id: int) -> None:
        for row, seq in enumerate(self._rows):
            if seq.seq_id == seq_id:
                self._keep_prefixes([row])
                self._remove_rows([row])
                self._maybe_trim()
                return

    def cache_bytes(self) -> int:
        return self._cache.nbytes() + (self.prefixes.nbytes if self.prefixes is not None else 0)

    def close(self) -> None:
        if self.prefixes is not None:
            self.prefixes.clear()
        self._reset_queue()
        self._rows.clear()
        self._cache = BatchKVCache(self._num_layers, row_limit=self.max_running)
        self._start = self._start[:0]

    def _after_step(self) -> None:
        self._maybe_trim()
        if self.prefixes is not None and len(self.prefixes):
            self.prefixes.fit(self._prefix_room())

    # -- prefill ---------------------------------------------------------------------------------

    def _admit(self, *, share: bool = False) -> list[_Sequence]:
        """Queued sequences for this step's prefill: FIFO, within the row and token budgets. With
        ``share``, a prompt already in the batch costs no tokens (it is prefilled once), and a
        prompt's kept prefix (``self._hits``) costs none either."""
        room = self.max_running - len(self._rows)
        batch: list[_Sequence] = []
        prompts: set[tuple[int, ...]] = set()
        self._hits = {}
        longest = 0
        while self._queue and len(batch) < room:
            nxt = self._queue[0]
            key = tuple(nxt.prompt)
            hit = self._lookup(nxt) if share and key not in prompts else self._hits.get(key)
            longest_if = max(longest, len(nxt.prompt) - (hit[1] if hit else 0))
            distinct = len(prompts | {key}) if share else len(batch) + 1
            # The padded batch is what gets computed; always admit one so a long prompt runs.
            if batch and longest_if * distinct > self.max_batched_tokens:
                break
            batch.append(self._queue.popleft())
            if hit is not None:
                self._hits[key] = hit
            prompts.add(key)
            longest = longest_if
        for seq in batch:  # a prompt's echo needs the logits of every prompt position
            if seq.params.prompt_logprobs is not None:
                self._hits.pop(tuple(seq.prompt), None)
        return batch

    def _lookup(self, seq: _Sequence) -> tuple[PrefixEntry, int] | None:
        if self.prefixes is None or seq.params.prompt_logprobs is not None:
            return None
        return self.prefixes.lookup(seq.prompt)

    def _prefill(self, out: dict[int, StepOutput]) -> None:
        batch = self._admit(share=True)
        if not batch:
            return
        # One prefill per distinct prompt: the rows of one prompt (a request's n choices) start
        # from copies of its cache row and last logits, and then sample on their own.
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(s.prompt), len(distinct)) for s in batch]
        prompts = [list(p) for p in distinct]
        # Row i reuses kept[i] columns of a kept prefix and prefills its prompt's rest.
        hits = [self._hits.get(tuple(p)) for p in prompts]
        self._hits = {}
        kept = [hit[1] if hit else 0 for hit in hits]
        rest = [len(p) - k for p, k in zip(prompts, kept, strict=True)]
        n, width, past = len(prompts), max(rest), max(kept)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        for i, (prompt, k) in enumerate(zip(prompts, kept, strict=True)):
            ids[i, width - rest[i] :] = torch.tensor(prompt[k:], dtype=torch.long)
        ids = ids.to(self.device)
        kept_t = torch.tensor(kept, dtype=torch.long, device=self.device)
        gaps = width - torch.tensor(rest, dtype=torch.long, device=self.device)  # padding before the rest
        cols = torch.arange(width, device=self.device)
        positions = (kept_t.unsqueeze(1) + cols.unsqueeze(0) - gaps.unsqueeze(1)).clamp_(min=0)

        log.debug(
            "prefill",
            extra={"rows": len(batch), "prompts": n, "width": width, "reused": sum(kept), "running": len(self._rows)},
        )  # fmt: skip
        self.prefilled_tokens += sum(rest)
        if self.prefixes is not None and past:
            self.prefixes.stats.hits += sum(1 for k in kept if k)
            self.prefixes.stats.reused_tokens += sum(kept)
        cache = BatchKVCache(self._num_layers)
        cache.rows = n
        if past:
            reused = [(i, hit[0].layers, hit[1]) for i, hit in enumerate(hits) if hit is not None]
            cache.load_prefixes(n, past, width, reused)
        mask = self._prefill_mask(kept_t, gaps, past, width)
        # Only a batch with a sequence that asked for its prompt's logprobs keeps every position.
        echo = [i for i, s in enumerate(batch) if s.params.prompt_logprobs is not None]
        every = self._forward(ids, positions, mask, cache, every_position=bool(echo))
        rows_of = torch.tensor(source, dtype=torch.long, device=self.device)
        logits = every[:, -1, :].index_select(0, rows_of)
        cache.advance(width)
        if past:  # each row's kept columns move right, next to its prefilled ones
            moves = [(i, k, int(gaps[i])) for i, k in enumerate(kept) if k and int(gaps[i])]
            cache.close_gaps(past, moves)
        starts = past + gaps - kept_t
        prompt_lps: dict[int, list[TokenLogprob | None]] = {}
        for i in echo:
            seq = batch[i]
            k = seq.params.prompt_logprobs or 0
            prompt_lps[i] = prompt_logprobs(every[source[i], width - len(seq.prompt) :], seq.prompt, k)
        del every

        tokens, lps = sample_with_logprobs(logits, [s.sampling() for s in batch], self._eos)
        done = set(record(out, batch, tokens, lps, self._accept, self._known, prompt_lps))
        keep = [i for i in range(len(batch)) if i not in done]
        if keep:
            self._merge(cache, batch, starts, keep, [source[i] for i in keep])

    def _merge(
        self,
        cache: BatchKVCache,
        batch: list[_Sequence],
        starts: torch.Tensor,
        keep: list[int],
        cache_rows: list[int] | None = None,
    ) -> None:
        """The kept sequences ``batch[i]`` join the running batch from row ``cache_rows[i]`` of the
        prefilled ``cache`` (row ``i`` when not given; a row may be copied for several)."""
        rows = torch.tensor(keep if cache_rows is None else cache_rows, dtype=torch.long, device=self.device)
        new_starts = starts.index_select(0, rows)
        if not self._rows:
            # Nothing running: the prefilled cache becomes the running one, no copy.
            cache.keep_rows(rows)
            cache.row_limit = self.max_running
            self._cache = cache
            self._start = new_starts
        else:
            if cache.length > self._cache.length:
                shift = cache.length - self._cache.length
                self._cache.shift_right(shift)
                self._start = self._start + shift
            offset = self._cache.length - cache.length
            self._cache.append_rows(cache, rows)
            self._start = torch.cat([self._start, new_starts + offset])
        self._rows.extend(batch[i] for i in keep)

    # -- decode ----------------------------------------------------------------------------------

    def _decode(self, out: dict[int, StepOutput]) -> None:
        rows = self._rows
        ids = torch.tensor([[s.last_token] for s in rows], dtype=torch.long).to(self.device)
        length = self._cache.length
        positions = (length - self._start).unsqueeze(1)
        mask = self._decode_mask(length + 1)
        self._cache.rows = len(rows)
        logits = self._forward(ids, positions, mask, self._cache)[:, -1, :]
        self._cache.advance(1)

        tokens, lps = sample_with_logprobs(logits, [s.sampling() for s in rows], self._eos)
        done = record(out, rows, tokens, lps, self._accept, self._known)
        if done:
            self._keep_prefixes(done)
            self._remove_rows(done)

    # -- prefix reuse ----------------------------------------------------------------------------

    def _prefix_room(self) -> int:
        assert self.prefixes is not None
        return self.prefixes.budget_bytes - self._cache.nbytes()

    def _keep_prefixes(self, rows: list[int]) -> None:
        """Copy the K/V of the leaving ``rows`` into the prefix store, keyed by their tokens."""
        if self.prefixes is None:
            return
        length = self._cache.length
        for row in rows:
            seq = self._rows[row]
            start = int(self._start[row])
            # The cache holds the prompt and every generated token but the last (never fed).
            tokens = [*seq.prompt, *seq.output[:-1]][: length - start]
            if len(tokens) < 2:
                continue
            layers = self._cache.row_columns(row, start, start + len(tokens))
            self.prefixes.put(tokens, layers, self._prefix_room())

    # -- shared ----------------------------------------------------------------------------------

    def _forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: Any,
        cache: BatchKVCache,
        *,
        every_position: bool = False,
    ) -> torch.Tensor:
        """``[rows, positions, vocab]`` logits: the last position only unless ``every_position``."""
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "past_key_values": cache,
            "use_cache": True,
        }
        if self._logits_to_keep and not every_position:
            kwargs["logits_to_keep"] = 1
        result = self.model(**kwargs)
        logits: torch.Tensor = result.logits if every_position else result.logits[:, -1:, :]
        return logits

    def _remove_rows(self, rows: list[int]) -> None:
        # Descending order: every row still to remove lies before the current last row.
        for row in sorted(rows, reverse=True):
            moved = self._cache.remove_row(row)
            if moved is not None:
                self._rows[row] = self._rows[moved]
                self._start[row] = self._start[moved]
            self._rows.pop()
            self._start = self._start[: len(self._rows)]

    def _maybe_trim(self) -> None:
        if not self._rows:
            self._cache.reset()
            return
        pad = int(self._start.min())
        if pad >= _TRIM_MIN_COLUMNS and pad * 4 >= self._cache.length:
            self._cache.trim_left(pad)
            self._start = self._start - pad

    # -- masks -----------------------------------------------------------------------------------

    def _prefill_mask(self, kept: torch.Tensor, gaps: torch.Tensor, past: int, width: int) -> Any:
        """The mask of a prefill of ``width`` query columns after ``past`` columns of kept K/V:
        row ``i`` has ``kept[i]`` kept columns ending at ``past``, then ``gaps[i]`` padding
        columns, then its prompt's rest. Distances (for sliding windows) are in positions."""
        n = kept.shape[0]
        cols = torch.arange(past + width, device=self.device)  # key columns
        qcols = torch.arange(width, device=self.device)
        after = (cols - past).unsqueeze(0)  # [1, key]: query index of a prefilled column
        in_kept = (cols.unsqueeze(0) >= past - kept.unsqueeze(1)) & (after < 0)  # [row, key]
        in_rest = after >= gaps.unsqueeze(1)
        causal = after.unsqueeze(1) <= qcols.view(1, width, 1)  # [1, query, key]
        # A padding query attends to itself only: never a fully masked row (NaN in SDPA), and
        # the K/V it leaves in padding columns stay finite.
        diagonal = after.unsqueeze(1) == qcols.view(1, width, 1)
        allowed = causal & (in_kept | in_rest).unsqueeze(1) | diagonal  # [row, query, key]
        key_pos = torch.where(
            after < 0,
            cols.unsqueeze(0) - (past - kept.unsqueeze(1)),
            kept.unsqueeze(1) + after - gaps.unsqueeze(1),
        )
        query_pos = kept.unsqueeze(1) + qcols.unsqueeze(0) - gaps.unsqueeze(1)  # [row, query]
        distance = query_pos.unsqueeze(2) - key_pos.unsqueeze(1)  # [row, query, key]
        allowed = allowed.expand(n, width, past + width)
        return self._finish_mask(allowed.unsqueeze(1), distance.unsqueeze(1))

    def _decode_mask(self, width: int) -> Any:
        cols = torch.arange(width, device=self.device)
        allowed = cols.unsqueeze(0) >= self._start.unsqueeze(1)  # [row, key]
        distance = (width - 1 - cols).unsqueeze(0)  # [1 query, key]
        return self._finish_mask(allowed[:, None, None, :], distance)

    def _finish_mask(self, allowed: torch.Tensor, distance: torch.Tensor) -> Any:
        plan = self._mask_plan
        if plan.layer_windows is not None:
            return {kind: self._encode_mask(allowed, distance, w) for kind, w in plan.layer_windows.items()}
        return self._encode_mask(allowed, distance, plan.window)

    def _encode_mask(self, allowed: torch.Tensor, distance: torch.Tensor, window: int | None) -> torch.Tensor:
        if window is not None:
            allowed = allowed & (distance < window)
        if self._mask_plan.boolean:
            return allowed
        dtype = next(self.model.parameters()).dtype
        zero = torch.zeros((), dtype=dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
