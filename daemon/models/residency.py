"""Residency: how long a loaded model stays, and what must leave for another to load.

- Keep-alive: seconds an idle model stays loaded; per model (``[[models]] keep_alive``, else
  ``default_keep_alive``) and per request, as in Ollama: the last request to finish sets the
  timer; 0 unloads after the request; negative keeps it loaded. ``run`` is the reaper task
  that unloads expired models.
- Admission: before loading, the model's estimate is reserved in the budget of the device's
  memory pool (``hfd.daemon.models.memory``). When the pool is full the least recently used
  idle models are unloaded; a model in use is never unloaded. When everything else is busy it
  waits (``memory_wait_timeout``) for a model to become idle, then refuses with
  ``ModelUnavailable`` and a Retry-After. A model larger than the whole budget is refused with
  ``InsufficientMemory``.

Every unload (keep-alive, eviction, ``hfd unload``, shutdown) goes through ``close``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc

from hfd._units import format_bytes as human
from hfd.client.errors import HfdError, InsufficientMemory, InvalidRequest, ModelUnavailable
from hfd.daemon.models.budgets import Budgets, default_budgets, release_to_os
from hfd.daemon.models.loaded import LoadedModel
from hfd.daemon.models.memory import MemoryEstimate
from hfd.daemon.settings import ModelSpec, Settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Retry-After given when a load is refused because every other model is busy: about the time a
# typical request takes to finish and free its model.
BUSY_RETRY_AFTER = 5.0


@dataclass
class Slot:
    """One model's place: its lock (one load at a time), what is loaded, and the last failure."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    loaded: LoadedModel | None = None
    attempts: int = 0  # loads started; waiters compare it to share a failed load's error
    error: HfdError | None = None  # the last failed load's error


def check_keep_alive(keep_alive: float | None) -> None:
    """Refuse a keep-alive that is not a finite number: NaN never compares, so a model kept
    with it would never expire and its ``hfd ps`` row could not be serialised. The doors'
    schema refuses these already; this guards every other caller."""
    if keep_alive is not None and not math.isfinite(keep_alive):
        raise InvalidRequest(f"keep_alive must be a finite number, not {keep_alive!r}", param="keep_alive")


class Residency:
    def __init__(
        self, settings: Settings, *, clock: Clock, budgets: Budgets | None, counters: dict[str, int]
    ) -> None:
        self.settings = settings
        self.slots: dict[str, Slot] = {}
        self.counters = counters
        self._clock = clock
        self._budgets = budgets
        self._wake = anyio.Event()  # set when an expiry is armed: the reaper recomputes its sleep
        self._room = anyio.Lock()  # one load at a time decides what to evict
        self._changed = anyio.Event()  # set when a model becomes idle or memory is released

    @property
    def budgets(self) -> Budgets:
        if self._budgets is None:
            s = self.settings
            self._budgets = default_budgets(s.memory_budget_bytes, s.gpu_memory_budget_bytes)
            log.info(
                "memory budgets", extra={"budgets": {k: human(v) for k, v in self._budgets.limits.items()}}
            )
        return self._budgets

    def loaded(self) -> list[LoadedModel]:
        return [s.loaded for s in self.slots.values() if s.loaded is not None]

    # ----------------------------------------------------------------- keep-alive

    def default_keep_alive(self, spec: ModelSpec) -> float:
        return spec.keep_alive if spec.keep_alive is not None else self.settings.default_keep_alive

    def keep(self, lm: LoadedModel, keep_alive: float) -> None:
        lm.keep_alive = keep_alive
        self.arm(lm)

    def arm(self, lm: LoadedModel) -> None:
        """Start an idle model's keep-alive timer."""
        if lm.in_use:
            return
        lm.expires_at = None if lm.keep_alive < 0 else self._clock() + lm.keep_alive
        self._wake.set()

    async def reap(self) -> list[str]:
        """Unload every idle model whose keep-alive has passed; returns their names."""
        now = self._clock()
        gone = []
        for name, slot in list(self.slots.items()):
            lm = slot.loaded
            if lm is not None and lm.in_use == 0 and lm.expires_at is not None and lm.expires_at <= now:
                async with slot.lock:
                    if slot.loaded is lm and lm.in_use == 0:
                        slot.loaded = None
                        await self.close(lm, grace=0.0)
                        gone.append(name)
        return gone

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The reaper: sleeps until the next expiry (or a change), then unloads what expired."""
        task_status.started()
        while True:
            expiries = [lm.expires_at for lm in self.loaded() if lm.expires_at is not None]
            delay = max(0.0, min(expiries) - self._clock()) if expiries else math.inf
            self._wake = anyio.Event()
            with anyio.move_on_after(min(delay, 3600.0)):
                await self._wake.wait()
            await self.reap()

    # ----------------------------------------------------------------- memory

    def notify(self) -> None:
        """Wake loads waiting for room: a model became idle or memory was released."""
        self._changed.set()
        self._changed = anyio.Event()

    async def make_room(self, name: str, pool: str, need: int, estimate: MemoryEstimate) -> None:
        """Reserve ``need`` bytes in ``pool`` for ``name``, unloading idle models (least
        recently used first) or waiting for busy ones to become idle."""
        budgets = self.budgets
        limit = budgets.limit(pool)
        if need > limit:
            self.counters["refused"] += 1
            parts = ", ".join(f"{k} {human(v)}" for k, v in estimate.to_dict().items() if k != "total" and v)
            raise InsufficientMemory(
                f"model {name!r} needs about {human(need)} ({parts}) but the {pool} budget is {human(limit)}; "
                "raise memory_budget_bytes, or lower max_running / memory_context_tokens, or use a smaller "
                "weight format",
                details={
                    "model": name,
                    "pool": pool,
                    "needed_bytes": need,
                    "budget_bytes": limit,
                    "estimate": estimate.to_dict(),
                },
            )
        async with self._room:
            deadline = anyio.current_time() + self.settings.memory_wait_timeout
            while True:
                changed = self._changed  # taken before the check, so no wake-up is missed
                if budgets.room(pool, excluding=name) >= need:
                    budgets.reserve(name, pool, need)
                    return
                victim = self._least_recently_used(pool, excluding=name)
                if victim is not None:
                    await self._evict(victim)
                    continue
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    break
                with anyio.move_on_after(remaining):
                    await changed.wait()
            self.counters["refused"] += 1
            busy = [lm.name for lm in self.loaded() if lm.pool == pool and lm.in_use]
            raise ModelUnavailable(
                f"model {name!r} needs {human(need)} of {pool} memory; {human(budgets.room(pool, excluding=name))} is "
                f"free of a {human(limit)} budget and the models holding the rest are busy ({', '.join(busy) or 'loading'})",
                retry_after=BUSY_RETRY_AFTER,
                details={"model": name, "pool": pool, "needed_bytes": need, "busy": busy},
            )

    def _least_recently_used(self, pool: str, *, excluding: str) -> LoadedModel | None:
        idle = [lm for lm in self.loaded() if lm.pool == pool and lm.in_use == 0 and lm.name != excluding]
        if not idle:
            return None
        # Models kept "forever" (keep_alive < 0) go last: the user asked to keep them.
        return min(idle, key=lambda lm: (lm.keep_alive < 0, lm.last_used))

    async def _evict(self, lm: LoadedModel) -> None:
        slot = self.slots[lm.name]
        async with slot.lock:
            if slot.loaded is lm and lm.in_use == 0:
                slot.loaded = None
                log.info(
                    "unloading the least recently used idle model to make room",
                    extra={"model": lm.name, "pool": lm.pool},
                )
                self.counters["evictions"] += 1
                await self.close(lm, grace=0.0)

    async def close(self, lm: LoadedModel, grace: float) -> None:
        """Stop the model's scheduler, close its engine and release its reservation."""
        try:
            with anyio.CancelScope(shield=True):
                await lm.scheduler.aclose(grace=grace)
                await anyio.to_thread.run_sync(lm.model.close)
                # Give the freed weights back to the OS, so the daemon's footprint follows the
                # budget rather than its high-water mark.
                await anyio.to_thread.run_sync(release_to_os)
        finally:
            self.budgets.release(lm.name)
            self.counters["unloads"] += 1
            self.notify()
        log.info("model unloaded", extra={"model": lm.name})
