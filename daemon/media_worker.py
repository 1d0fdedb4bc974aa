"""The scheduler of speech, image-text and vision-chat models: their engine calls, one call at a
time, on a worker thread, off the event loop.

Two ways in. ``run(fn, *args)`` is one request's call. ``run_batched(fn, item, key=, limit=)``
is the batch hook: ``fn`` takes a list of items and returns one result per item (a result that
is an exception is raised to that item's caller alone); requests waiting for the same ``fn``
with an equal ``key`` go into one call, at most ``limit`` of them, in arrival order. The engine
decides: it gives the key (the options that must agree for one batched call; None: this one
runs alone) and the limit (how many requests it takes at once). Whisper on torch batches its
30 s windows this way (``hfd.backends.whisper_torch``); other engines call ``run``.

Order: calls run in arrival order of their first request; a call takes the compatible requests
waiting behind it, so a request may finish before one that arrived earlier with other options.

Back-pressure: at most ``max_queue`` requests wait or run; beyond that ``run`` raises
``Overloaded`` at once. A request whose caller is cancelled (its client went away) while it
waits never reaches the engine; one already in a running call finishes with it (an engine call
cannot be interrupted) and its result is discarded.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import anyio

from hfd.client.errors import HfdError, InternalError, Overloaded
from hfd.daemon.scheduler.base import SchedulerCore, SchedulerStats

log = logging.getLogger(__name__)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a batch


@dataclass(frozen=True, kw_only=True)
class MediaStats(SchedulerStats):
    kind: Literal["media"] = "media"  # type: ignore[assignment]
    waiting: int
    requests_finished: int
    dropped: int  # cancelled before reaching the engine
    calls: int  # engine calls made (a batched call counts once)


@dataclass(eq=False)
class _Job:
    fn: Callable[[list[Any]], Sequence[Any]]
    item: Any
    key: Hashable | None  # None: runs alone
    limit: int
    wake: anyio.Event = field(default_factory=anyio.Event)
    lead: bool = False  # this job's task makes the next call
    counted: bool = True  # False: the scheduler's own (its shutdown), not a request's call
    done: bool = False
    result: Any = None


class MediaScheduler(SchedulerCore[Any]):
    def __init__(self, model: Any, *, name: str, max_queue: int) -> None:
        super().__init__(model, name=name, max_queue=max_queue)
        self._running = False
        self._queue: deque[_Job] = deque()  # waiting, in arrival order (event loop only)
        self._busy = False  # a call is being made or its maker is waking up
        self._finished = 0
        self._dropped = 0
        self._calls = 0

    def start(self) -> None:
        self._running = True

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread, after the calls before it."""
        result: T = await self.run_batched(lambda _items: [fn(*args)], None, key=None, limit=1)
        return result

    async def run_batched(self, fn: Callable[[list[I]], Sequence[T | BaseException]], item: I, *,
                          key: Hashable | None, limit: int) -> T:  # fmt: skip
        """``fn``'s result for ``item``, computed in one call with up to ``limit - 1`` other
        waiting items of the same ``fn`` and an equal ``key`` (None: alone)."""
        if not self._running:
            raise InternalError(f"the scheduler of model {self.name!r} is not running")
        if self._active >= self.max_queue:
            self._rejected += 1
            raise Overloaded(f"model {self.name!r} has {self._active} requests queued; try again shortly")
        self._active += 1
        try:
            job = _Job(fn, item, None if key is None else (fn, key), max(1, limit))
            return await self._submit(job)  # type: ignore[no-any-return]
        finally:
            self._active -= 1

    async def _submit(self, job: _Job) -> Any:
        self._queue.append(job)
        if not self._busy:
            self._next()
        try:
            await job.wake.wait()
        except anyio.get_cancelled_exc_class():
            if job.lead and not job.done:  # woken to make a call: make it, for the others in it
                with anyio.CancelScope(shield=True):
                    await self._call(job)
            elif not job.done and job in self._queue:
                self._queue.remove(job)
                self._dropped += 1
            raise
        if not job.done:
            await self._call(job)
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    def _next(self) -> None:
        """Wake the first waiting job to make the next call, or mark the scheduler idle."""
        if not self._queue:
            self._busy = False
            return
        self._busy = True
        head = self._queue.popleft()
        head.lead = True
        head.wake.set()

    async def _call(self, head: _Job) -> None:
        batch = [head]
        if head.key is not None:
            for other in list(self._queue):
                if len(batch) >= head.limit:
                    break
                if other.key == head.key:
                    self._queue.remove(other)
                    batch.append(other)
        try:
            # The engine call cannot be interrupted: wait for it even when cancelled, so the
            # next call never runs beside it.
            with anyio.CancelScope(shield=True):
                results = await anyio.to_thread.run_sync(self._compute, head.fn, [j.item for j in batch])
            for job, result in zip(batch, results, strict=True):
                job.result = result
        except HfdError as exc:
            for job in batch:
                job.result = exc
        except Exception as exc:
            self._errors += 1
            log.exception("media engine call failed", extra={"model": self.name, "batch": len(batch)})
            error = InternalError(f"the engine failed: {type(exc).__name__}: {exc}")
            for job in batch:
                job.result = error
        if head.counted:
            self._calls += 1
            self._finished += len(batch)
        for job in batch:
            job.done = True
            job.wake.set()
        self._next()

    @staticmethod
    def _compute(fn: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> Sequence[Any]:
        results = fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batched call returned {len(results)} results for {len(items)} items")
        return results

    def stats(self) -> MediaStats:
        return MediaStats(
            active=self._active, max_queue=self.max_queue, requests_rejected=self._rejected,
            errors=self._errors, waiting=len(self._queue), requests_finished=self._finished,
            dropped=self._dropped, calls=self._calls,
        )  # fmt: skip

    async def aclose(self, grace: float = 0.0) -> None:
        self._running = False
        # The calls queued end first; this marker is no request's call, so no counter counts it.
        await self._submit(_Job(lambda items: [None], None, None, 1, counted=False))
        close = getattr(self.model, "close", None)
        if callable(close):
            close()
