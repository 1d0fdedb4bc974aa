"""Dynamic batching over an ``EncoderModel`` (embeddings, and the rerank and classification
heads: ``run()`` takes inputs the task tokenised itself, text pairs with segment ids included,
and gives back each input's output row; a token head's rows are cut to each input's length).

The three stages of a batch run in different places, so they overlap:

1. pre-process: ``embed()`` tokenises its texts before queuing (a small request on the event
   loop, a large one on a worker-pool thread), so the next requests are tokenised while the
   current batch computes;
2. compute: one worker thread per model picks a batch from the pending inputs and runs it;
3. post-process: rows are copied into each request's result, and a finished request's future
   is resolved on its event loop (``loop.call_soon_threadsafe``).

Batch choice: inputs of similar length go together, so little compute is spent on padding. The
pending inputs are sorted by length and a batch grows around the oldest input (so nothing
starves) towards the neighbours closest in length, while the padded size (inputs x longest
input) stays within ``batch_tokens`` and the count within ``max_batch``. A batch that is not
full waits up to ``wait_ms`` after its oldest input arrived for more to come. One request's
inputs may be spread over several batches; its rows are reassembled in input order.

Back-pressure: at most ``max_queue`` requests are in the scheduler (tokenising, pending or
computing); beyond that ``embed()`` raises ``Overloaded`` at once.

Abandonment: when the task awaiting ``embed()`` is cancelled (a door cancels it when its client
goes away), the request is marked done; its inputs not yet in a batch are dropped at the next
batch boundary, never computed, and counted in ``stats().dropped_items``. A batch already
computing finishes (an engine call cannot be interrupted), and its rows for the request are
discarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import numpy as np

from hfd.backends.base import EncoderModel, TokenizedBatch
from hfd.client.errors import Cancelled, HfdError, InternalError, InvalidRequest, ModelUnavailable, Overloaded
from hfd.daemon.metrics import record_batch
from hfd.daemon.scheduler.base import EncoderStats, ThreadedScheduler

log = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.float32)  # a row not computed yet

# Requests with at most this many characters are tokenised on the event loop: about 0.1 ms for a
# sentence, where a worker-thread round trip costs about 0.4 ms of CPU (wake-ups, GIL hand-offs)
# that the engine thread then lacks.
INLINE_TOKENIZE_CHARS = 2048


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray  # float32, (n, dimensions), in input order
    prompt_tokens: int


@dataclass(frozen=True)
class RunResult:
    rows: list[np.ndarray]  # one float32 output per input, in input order
    prompt_tokens: int


class _Request:
    """One ``embed()`` or ``run()`` call while its inputs are in flight."""

    __slots__ = ("abandoned", "done", "future", "loop", "remaining", "rows")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        self.rows: list[np.ndarray] = [_EMPTY] * n
        self.remaining = n
        self.done = False  # failed, cancelled or complete: its pending inputs are dropped
        self.abandoned = False  # its caller was cancelled


@dataclass
class _Item:
    request: _Request
    index: int  # position in the request's inputs
    ids: list[int]
    type_ids: list[int] | None
    arrival: float
    order: int  # global arrival order: the oldest input anchors the next batch


class EncoderScheduler(ThreadedScheduler[EncoderModel]):
    thread_tag = "enc"

    def __init__(
        self,
        model: EncoderModel,
        *,
        name: str,
        max_queue: int,
        max_batch: int,
        batch_tokens: int,
        wait_ms: float,
    ) -> None:
        if max_queue < 1 or max_batch < 1 or batch_tokens < 1 or wait_ms < 0:
            raise ValueError("max_queue, max_batch and batch_tokens must be at least 1; wait_ms not negative")
        super().__init__(model, name=name, max_queue=max_queue)
        self.max_batch = max_batch
        self.batch_tokens = batch_tokens
        self.wait = wait_ms / 1000.0
        self._pending: list[_Item] = []  # guarded by _cond
        self._order = 0
        self._idle = anyio.Event()  # set when _active drops to 0; replaced when it rises
        # Counters for stats(), written by the worker.
        self._batches = 0
        self._inputs = 0
        self._padded = 0
        self._real = 0
        self._compute_seconds = 0.0
        self._dropped = 0  # inputs of abandoned requests removed before computing

    # ----------------------------------------------------------------- public API

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        """Vectors of ``texts`` in order. Raises ``Overloaded`` when ``max_queue`` requests wait."""
        if not texts:
            raise InvalidRequest("input must not be empty", param="input")
        result = await self._submit(list(texts), None)
        return EmbedResult(
            vectors=np.stack(result.rows).astype(np.float32, copy=False), prompt_tokens=result.prompt_tokens
        )

    async def run(self, batch: TokenizedBatch) -> RunResult:
        """The model's output row of each input of ``batch`` (tokenised by the caller), in order."""
        if not batch.ids:
            raise InvalidRequest("input must not be empty", param="input")
        return await self._submit(None, batch)

    async def _submit(self, texts: list[str] | None, tokenized: TokenizedBatch | None) -> RunResult:
        if self._closed:
            raise ModelUnavailable(f"model {self.name!r} is unloading", retry_after=1.0)
        if self._active >= self.max_queue:
            self._rejected += 1
            raise Overloaded(
                f"model {self.name!r} has {self._active} requests in progress; retry later",
                retry_after=self._retry_after(),
            )
        if not self._active:
            self._idle = anyio.Event()
        self._active += 1
        try:
            batch = tokenized if tokenized is not None else await self._tokenize(texts or [])
            request = _Request(len(batch.ids), asyncio.get_running_loop())
            self._enqueue(request, batch)
            try:
                rows = await request.future
            except BaseException:
                # Cancelled (the client went away) or interrupted: nobody wants the rest. The
                # worker drops the request's pending inputs before it chooses its next batch.
                if not request.done:
                    request.abandoned = True
                    request.done = True
                    self._drop_abandoned()
                raise
            return RunResult(rows=rows, prompt_tokens=sum(batch.lengths))
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _tokenize(self, texts: list[str]) -> TokenizedBatch:
        """Small inputs inline (cheaper than a thread round trip), large ones on a pool thread
        so the event loop never stalls; either way off the engine's worker thread."""
        try:
            if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
                return self.model.tokenize(texts)
            return await anyio.to_thread.run_sync(self.model.tokenize, texts)
        except HfdError:
            raise
        except Exception as exc:
            raise InvalidRequest(f"cannot tokenize the input: {exc}", param="input") from exc

    def stats(self) -> EncoderStats:
        batches = self._batches
        return EncoderStats(
            active=self._active,
            pending_inputs=len(self._pending),
            max_queue=self.max_queue,
            max_batch=self.max_batch,
            batch_tokens=self.batch_tokens,
            batches=batches,
            inputs=self._inputs,
            mean_batch_size=round(self._inputs / batches, 3) if batches else 0.0,
            padding_efficiency=round(self._real / self._padded, 3) if self._padded else 1.0,
            mean_batch_ms=round(1000 * self._compute_seconds / batches, 3) if batches else 0.0,
            requests_rejected=self._rejected,
            errors=self._errors,
            dropped_items=self._dropped,
        )

    async def aclose(self, grace: float = 0.0) -> None:
        """Let queued work finish for up to ``grace`` seconds, fail the rest, stop the thread."""
        self._closed = True
        if self._active and grace > 0:
            with anyio.move_on_after(grace):
                await self._idle.wait()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join)
            self._thread = None
        self._fail_pending()

    # ----------------------------------------------------------------- worker thread

    def _enqueue(self, request: _Request, batch: TokenizedBatch) -> None:
        now = time.monotonic()
        types = batch.type_ids
        with self._cond:
            if self._stopping:
                request.future.set_exception(Cancelled(f"model {self.name!r} was unloaded"))
                return
            for index, row in enumerate(batch.ids):
                type_row = types[index] if types is not None else None
                self._pending.append(_Item(request, index, row, type_row, now, self._order))
                self._order += 1
            self._cond.notify()

    def _drop_abandoned(self) -> None:
        """Remove the inputs of finished requests from the pending list (worker's lock)."""
        with self._cond:
            self._prune()

    def _prune(self) -> None:
        kept = [item for item in self._pending if not item.request.done]
        if len(kept) != len(self._pending):
            # Inputs of failed requests leave too; only abandoned ones count, as those are the
            # work a departed client would otherwise have cost.
            self._dropped += sum(1 for item in self._pending if item.request.abandoned)
            self._pending = kept

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._compute(batch)
        except BaseException:
            log.exception("encoder worker crashed", extra={"model": self.name})
            raise
        finally:
            self._fail_pending()

    def _next_batch(self) -> list[_Item] | None:
        """Block until a batch is due; None when stopping."""
        with self._cond:
            while True:
                self._prune()
                if self._stopping:
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                chosen, full = self._choose()
                due = min(item.arrival for item in self._pending) + self.wait
                delay = due - time.monotonic()
                if full or delay <= 0:
                    taken = {id(item) for item in chosen}
                    self._pending = [item for item in self._pending if id(item) not in taken]
                    return chosen
                self._cond.wait(delay)

    def _choose(self) -> tuple[list[_Item], bool]:
        """A batch around the oldest pending input; ``full`` when it cannot grow any more."""
        items = sorted(self._pending, key=lambda item: (len(item.ids), item.order))
        anchor = min(range(len(items)), key=lambda i: items[i].order)
        lo = hi = anchor
        longest = len(items[anchor].ids)
        while hi - lo + 1 < self.max_batch:
            left = items[lo - 1] if lo > 0 else None
            right = items[hi + 1] if hi + 1 < len(items) else None
            if left is None and right is None:
                return items[lo : hi + 1], False
            target = len(items[anchor].ids)
            take_left = right is None or (
                left is not None and target - len(left.ids) <= len(right.ids) - target
            )
            if take_left:
                fits = (hi - lo + 2) * longest <= self.batch_tokens
            else:
                assert right is not None
                fits = (hi - lo + 2) * max(longest, len(right.ids)) <= self.batch_tokens
            if not fits:
                # The other side may still fit (a shorter input when the longer one did not).
                if not take_left and left is not None and (hi - lo + 2) * longest <= self.batch_tokens:
                    lo -= 1
                    continue
                return items[lo : hi + 1], True
            if take_left:
                lo -= 1
            else:
                hi += 1
                longest = max(longest, len(items[hi].ids))
        return items[lo : hi + 1], True

    def _compute(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            paired = any(item.type_ids is not None for item in batch)
            type_ids = [item.type_ids or [0] * len(item.ids) for item in batch] if paired else None
            vectors = self.model.embed(TokenizedBatch([item.ids for item in batch], type_ids))
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim not in (2, 3) or vectors.shape[0] != len(batch):
                raise ValueError(f"the engine returned shape {vectors.shape} for {len(batch)} inputs")
        except Exception as exc:
            log.exception("encoder batch failed", extra={"model": self.name, "inputs": len(batch)})
            self._errors += 1
            err = InternalError(f"the engine failed: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            failed = {id(item.request): item.request for item in batch}
            for request in failed.values():
                self._resolve(request, err)
            return
        self._batches += 1
        self._inputs += len(batch)
        record_batch(self.name, "encoder", len(batch))  # hfd_batch_size
        self._real += sum(len(item.ids) for item in batch)
        self._padded += len(batch) * max(len(item.ids) for item in batch)
        self._compute_seconds += time.perf_counter() - started
        per_token = vectors.ndim == 3  # a token head's rows, right-padded to the batch's longest
        for item, row in zip(batch, vectors, strict=True):
            request = item.request
            if request.done:
                continue
            request.rows[item.index] = row[: len(item.ids)].copy() if per_token else row
            request.remaining -= 1
            if request.remaining == 0:
                self._resolve(request, request.rows)

    def _resolve(self, request: _Request, value: list[np.ndarray] | HfdError) -> None:
        if request.done:
            return
        request.done = True
        try:
            request.loop.call_soon_threadsafe(_settle, request.future, value)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _fail_pending(self) -> None:
        with self._cond:
            pending, self._pending = self._pending, []
        for item in pending:
            self._resolve(
                item.request, Cancelled(f"model {self.name!r} was unloaded before the request finished")
            )

    def _retry_after(self) -> float:
        """A guess: the time to compute the batches the queue holds now."""
        if not self._batches:
            return 1.0
        per_batch = self._compute_seconds / self._batches
        batches = max(1.0, len(self._pending) / max(1.0, self._inputs / self._batches))
        return round(min(60.0, max(0.05, per_batch * batches)), 3)


def _settle(future: asyncio.Future[list[np.ndarray]], value: list[np.ndarray] | HfdError) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
