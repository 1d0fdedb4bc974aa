"""The scheduler of speech and image-text models: their engine calls, one at a time, on the
model's one worker thread, off the event loop.

Whisper requests are served one after another (a first version: batching concurrent requests
through one padded ``generate`` is not done yet). Image-text embeddings are batched by the
task itself (``hfd.daemon.images``), one request's inputs per call.

Back-pressure: at most ``max_queue`` requests wait or run; beyond that ``run`` raises
``Overloaded`` at once. A request whose caller is cancelled (its client went away) while it
waits never reaches the engine; one already running finishes (an engine call cannot be
interrupted) and its result is discarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio

from hfd.client.errors import HfdError, InternalError, Overloaded
from hfd.daemon.scheduler.base import SchedulerCore, SchedulerStats

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class MediaStats(SchedulerStats):
    kind: Literal["media"] = "media"  # type: ignore[assignment]
    waiting: int
    requests_finished: int
    dropped: int  # cancelled before reaching the engine


class MediaScheduler(SchedulerCore[Any]):
    def __init__(self, model: Any, *, name: str, max_queue: int) -> None:
        super().__init__(model, name=name, max_queue=max_queue)
        self._running = False
        self._turn = anyio.Lock()
        self._waiting = 0
        self._finished = 0
        self._dropped = 0

    def start(self) -> None:
        self._running = True

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model's worker thread, after the requests before it."""
        if not self._running:
            raise InternalError(f"the scheduler of model {self.name!r} is not running")
        if self._active >= self.max_queue:
            self._rejected += 1
            raise Overloaded(f"model {self.name!r} has {self._active} requests queued; try again shortly")
        self._active += 1
        self._waiting += 1
        started = False
        try:
            async with self._turn:
                self._waiting -= 1
                started = True
                try:
                    # The engine call cannot be interrupted: wait for it even when cancelled, so
                    # the next request never runs beside it.
                    with anyio.CancelScope(shield=True):
                        result = await anyio.to_thread.run_sync(fn, *args)
                except HfdError:
                    raise
                except Exception as exc:
                    self._errors += 1
                    log.exception("media engine call failed", extra={"model": self.name})
                    raise InternalError(f"the engine failed: {type(exc).__name__}: {exc}") from exc
                self._finished += 1
                return result
        except anyio.get_cancelled_exc_class():
            if not started:
                self._waiting -= 1
                self._dropped += 1
            raise
        finally:
            self._active -= 1

    def stats(self) -> MediaStats:
        return MediaStats(
            active=self._active, max_queue=self.max_queue, requests_rejected=self._rejected,
            errors=self._errors, waiting=self._waiting, requests_finished=self._finished, dropped=self._dropped,
        )  # fmt: skip

    async def aclose(self, grace: float = 0.0) -> None:
        self._running = False
        async with self._turn:  # the call in flight, if any, ends first
            pass
        close = getattr(self.model, "close", None)
        if callable(close):
            close()
