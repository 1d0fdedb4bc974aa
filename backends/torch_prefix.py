"""Prefix reuse for the torch engine: the K/V of finished sequences, kept for the next turn.

A chat's second turn sends the first turn's prompt and reply again, then the new message. When a
sequence leaves the running batch (finished or cancelled), ``ContinuousBatcher`` copies its K/V
columns here, keyed by the tokens they were computed from: the prompt and every generated token
but the last (the last one was sampled, never fed). A new prompt that starts with kept tokens
starts from a copy of their K/V and prefills only the rest (at least its last token, whose
logits choose the first new token).

Why that is exact: a token's K/V in a causal model depend only on the tokens before it and on its
position, and the batched cache keeps every column of a row at the row's own positions (sliding
windows are a mask over them, not dropped columns), so the kept K/V are those a full prefill
computes. It is used for every model ``ContinuousBatcher`` runs (plain, sliding-window and
per-layer-window attention); not for recurrent state (``torch_recurrent``: a state-space layer's
state exists only at the end of what was fed, not at every prefix) nor for encoder-decoder
models (their decoder K/V depend on the encoder input too).

Memory is bounded: entries go least recently used first once the kept K/V and the running
batch's cache together pass the budget (the KV memory the daemon reserved for the model). An
entry that is a prefix of a newer one is dropped (the newer one answers every lookup it did).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Lookups compare a prompt with every entry; this keeps one lookup within a few milliseconds.
MAX_ENTRIES = 256
# Fewer shared tokens than this are prefilled again: every prompt shares its first token or two
# (bos, a template's opening), and moving them costs more than computing them.
MIN_REUSE_TOKENS = 8
# Without a reservation from the daemon (the engine used directly): this much K/V is kept.
DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024


@dataclass
class PrefixEntry:
    tokens: torch.Tensor  # the ids the K/V were computed from (CPU, int64)
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer K and V, [kv_heads, len, head_dim]
    nbytes: int

    @property
    def length(self) -> int:
        return int(self.tokens.numel())


@dataclass
class PrefixStats:
    hits: int = 0  # prefills that started from an entry
    reused_tokens: int = 0  # prompt tokens not prefilled thanks to an entry
    stored: int = 0
    evicted: int = 0


class PrefixStore:
    """Kept prefixes, least recently used first, within ``budget_bytes`` with the running cache."""

    def __init__(
        self, budget_bytes: int, max_entries: int = MAX_ENTRIES, min_tokens: int = MIN_REUSE_TOKENS
    ) -> None:
        self.budget_bytes = max(0, int(budget_bytes))
        self.min_tokens = max(1, min_tokens)
        self.max_entries = max(1, max_entries)
        self._entries: OrderedDict[int, PrefixEntry] = OrderedDict()
        self._next = 0
        self.nbytes = 0
        self.stats = PrefixStats()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: Sequence[int]) -> tuple[PrefixEntry, int] | None:
        """The entry sharing the longest start with ``prompt`` and how many of its tokens to
        reuse: at most ``len(prompt) - 1``, so at least one token is prefilled, and at least
        ``min_tokens``."""
        limit = len(prompt) - 1
        if limit < self.min_tokens or not self._entries:
            return None
        ids = torch.tensor(prompt[:limit], dtype=torch.long)
        best: tuple[int, int] | None = None
        for key, entry in self._entries.items():
            n = min(limit, entry.length)
            last = self.min_tokens - 1  # a difference there leaves fewer than min_tokens shared
            if n < self.min_tokens or int(entry.tokens[last]) != int(ids[last]):
                continue
            differ = (entry.tokens[:n] != ids[:n]).nonzero()
            common = n if differ.numel() == 0 else int(differ[0, 0])
            if common >= self.min_tokens and (best is None or common > best[1]):
                best = (key, common)
        if best is None:
            return None
        key, common = best
        self._entries.move_to_end(key)
        return self._entries[key], common

    def put(self, tokens: Sequence[int], layers: list[tuple[torch.Tensor, torch.Tensor]], room: int) -> None:
        """Keep ``layers`` (computed from ``tokens``), then evict until the store fits ``room``
        bytes (the budget less what the running batch's cache holds)."""
        if not tokens:
            return
        ids = torch.tensor(list(tokens), dtype=torch.long)
        for key, entry in list(self._entries.items()):
            n = min(entry.length, ids.numel())
            if not bool((entry.tokens[:n] == ids[:n]).all()):
                continue
            if entry.length >= ids.numel():  # already kept, within a longer entry
                self._entries.move_to_end(key)
                return
            self._drop(key)  # the new entry covers it
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > room:
            return
        self._entries[self._next] = PrefixEntry(ids, layers, nbytes)
        self._next += 1
        self.nbytes += nbytes
        self.stats.stored += 1
        self.fit(room)

    def fit(self, room: int) -> None:
        """Evict least recently used entries until the store holds at most ``room`` bytes."""
        while self._entries and (self.nbytes > room or len(self._entries) > self.max_entries):
            self._drop(next(iter(self._entries)))
            self.stats.evicted += 1

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.nbytes -= entry.nbytes
