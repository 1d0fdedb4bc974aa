"""The model manager: the façade the service calls for models.

- A model loads on first use; concurrent requests for a model that is loading wait for that
  one load, and share its outcome (one lock per model, ``residency.Slot``).
- ``acquire(name)`` is an async context manager: while a request holds a model, it is never
  unloaded; when the last holder leaves, the model's keep-alive starts.
- A circuit breaker per (model, engine) (``hfd.daemon.models.breaker``) counts load failures
  and engine errors during requests; while open, the model answers ``ModelUnavailable`` at once.

What a name refers to is in ``refs``; engine choice, fallback and loading in ``loading``;
keep-alive, memory admission and eviction in ``residency``. Time comes from an injectable
clock so tests drive keep-alive and breakers without sleeping; the engine loader and the
hardware detector are injectable too (``loading.EngineLoader``, ``loading.HardwareDetector``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from hfd.backends.base import Task, is_alive
from hfd.backends.openvino_speculative import DRAFT_MODEL, DRAFT_PATH
from hfd.client.errors import Cancelled, HfdError, InvalidRequest, ModelNotFound, ModelUnavailable, Overloaded
from hfd.daemon.models import engine_choice, exporting
from hfd.daemon.models.breaker import Breakers
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.engine_memory import EngineMemory
from hfd.daemon.models.loaded import LoadedModel
from hfd.daemon.models.loading import (
    EngineLoader,
    HardwareDetector,
    Loader,
    detect_hardware,
    load_engine,
)
from hfd.daemon.models.refs import hide_paths, is_store_ref, resolve_local
from hfd.daemon.models.residency import Clock, Residency, Slot, check_keep_alive
from hfd.daemon.settings import ModelSpec, Settings

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Callable[[ModelSpec], Path] | None = None,
        clock: Clock = time.monotonic,
        budgets: Budgets | None = None,
        load_engine: EngineLoader = load_engine,
        detect_hardware: HardwareDetector = detect_hardware,
    ) -> None:
        self.settings = settings
        self._resolve = resolve or resolve_local
        self._clock = clock
        self._specs: dict[str, ModelSpec] = {s.public_name: s for s in settings.models}
        self.counters = {
            "loads": 0,
            "load_failures": 0,
            "unloads": 0,
            "evictions": 0,
            "refused": 0,
            "exports_built": 0,
            "engine_measurements": 0,  # candidate engines timed on a model (engine_choice)
        }
        self.breakers = Breakers(
            threshold=settings.breaker_failures, cooldown=settings.breaker_cooldown, clock=clock
        )
        self.residency = Residency(settings, clock=clock, budgets=budgets, counters=self.counters)
        self.loader = Loader(
            settings,
            self.residency,
            self.breakers,
            clock=clock,
            counters=self.counters,
            load_engine=load_engine,
            detect_hardware=detect_hardware,
        )
        self._slots = self.residency.slots

    # ----------------------------------------------------------------- catalogue

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def spec(self, name: str) -> ModelSpec:
        spec = self._specs.get(name)
        if spec is None:
            for s in self._specs.values():
                if s.ref == name:
                    return s
            if is_store_ref(name):
                # Not configured, but a store reference: the store decides at load time whether
                # it has the model (or may pull it), and says where it looked if not. Local
                # paths are never taken from a request: clients must not choose files to read.
                # The spec is not kept until the store resolves it (``_load``): names come from
                # clients, and every unknown one kept would grow the model list and metrics.
                return ModelSpec(ref=name)
            raise ModelNotFound(
                f"model {name!r} is not served here; known models: {', '.join(sorted(self._specs)) or 'none'}",
                param="model",
            )
        return spec

    def loaded(self) -> list[LoadedModel]:
        return self.residency.loaded()

    def now(self) -> float:
        return self._clock()

    @property
    def budgets(self) -> Budgets:
        return self.residency.budgets

    @property
    def engine_memory(self) -> EngineMemory:
        return self.loader.engine_memory

    def candidates(self, task: Task, spec: ModelSpec) -> list[tuple[str, str, str]]:
        """(engine, device, why) in the order a load of ``spec`` tries them."""
        return self.loader.candidates(task, spec)

    def identity(self, name: str) -> str | None:
        """The snapshot identity of a model (for the response cache) without loading it: the
        loaded model's, else recomputed from how it was last loaded; None if never loaded."""
        spec = self.spec(name)
        slot = self._slots.get(spec.public_name)
        if slot is not None and slot.loaded is not None:
            return slot.loaded.identity
        recipe = self.loader.recipes.get(spec.public_name)
        if recipe is None:
            return None
        try:
            return recipe.identity()
        except OSError:
            return None

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "loaded": len(self.loaded()),
            "memory": self.budgets.snapshot(),
            "breakers": self.breakers.tripped(),
        }

    # ----------------------------------------------------------------- use

    @asynccontextmanager
    async def acquire(self, name: str, keep_alive: float | None = None) -> AsyncIterator[LoadedModel]:
        check_keep_alive(keep_alive)
        lm = await self.load(name)
        # No await between here and in_use += 1: an evictor cannot slip in between.
        probe = lm.breaker.check() if lm.breaker is not None else False
        lm.in_use += 1
        lm.expires_at = None
        verdict: bool | None = True
        try:
            yield lm
        except BaseException as exc:
            verdict = _verdict(exc)
            if verdict is False and lm.breaker is not None:
                lm.breaker.failure(_describe(exc))
            raise
        finally:
            if lm.breaker is not None:
                if verdict is True:
                    lm.breaker.success()
                elif verdict is None and probe:
                    lm.breaker.release()
            lm.in_use -= 1
            lm.last_used = self._clock()
            lm.keep_alive = (
                keep_alive if keep_alive is not None else self.residency.default_keep_alive(lm.spec)
            )
            if lm.in_use == 0:
                self.residency.arm(lm)
                self.residency.notify()

    async def load(self, name: str, keep_alive: float | None = None) -> LoadedModel:
        spec = self.spec(name)
        check_keep_alive(keep_alive)
        slot = self._slots.setdefault(spec.public_name, Slot())
        try:
            return await self._load_slot(spec, slot, keep_alive)
        except HfdError as exc:
            # Engines and loaders name files in their errors; the client gets the message
            # without them (the log has the full one, from where the load failed).
            hidden = hide_paths(exc.message)
            if hidden != exc.message:
                exc.message = (
                    hidden if spec.public_name in hidden else f"model {spec.public_name!r}: {hidden}"
                )
                exc.args = (exc.message,)
            raise
        finally:
            # A name that never resolved leaves no slot behind (its waiters hold the slot itself
            # and still share its error); the next request for it starts afresh.
            name = spec.public_name
            if (
                slot.loaded is None
                and name not in self._specs
                and not slot.lock.locked()
                and self._slots.get(name) is slot
            ):
                del self._slots[name]

    async def _load_slot(self, spec: ModelSpec, slot: Slot, keep_alive: float | None) -> LoadedModel:
        dead = slot.loaded
        if dead is not None and not is_alive(dead.model):
            # An engine that lives in another process can die on its own (OOM killer, a crash);
            # its requests have failed already. Drop it, and load the model afresh below.
            async with slot.lock:
                if slot.loaded is dead:
                    slot.loaded = None
                    log.warning("model engine is gone; loading the model again", extra={"model": dead.name})
                    self.loader.engine_died(dead)
                    await self.residency.close(dead, grace=0.0)
        if slot.loaded is not None:
            if keep_alive is not None:
                self.residency.keep(slot.loaded, keep_alive)
            return slot.loaded
        blocked = self.breakers.blocked(spec.public_name)
        if blocked is not None:
            raise blocked.unavailable()
        attempt = slot.attempts
        async with slot.lock:
            if slot.loaded is None:
                if slot.attempts != attempt and slot.error is not None:
                    # The load we waited for failed: share its answer rather than retry at once.
                    err = slot.error
                    raise type(err)(
                        err.message, param=err.param, retry_after=err.retry_after, details=err.details
                    )
                slot.attempts += 1
                slot.error = None  # waiters only share the error of the attempt they waited for
                try:
                    slot.loaded = await self._load(spec)
                except HfdError as exc:
                    slot.error = exc
                    raise
                self.residency.arm(slot.loaded)
        lm = slot.loaded
        if keep_alive is not None:
            self.residency.keep(lm, keep_alive)
        return lm

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        self.loader.phases.enter(spec.public_name, "resolving", task=spec.task or "")
        try:
            path = await anyio.to_thread.run_sync(self._resolve, spec)
            # Resolved in the store (or pulled): from now on the name is one of the daemon's models.
            self._specs.setdefault(spec.public_name, spec)
            return await self.loader.load(await self._with_draft(spec, path), path)
        finally:
            self.loader.phases.done(spec.public_name)

    async def _with_draft(self, spec: ModelSpec, path: Path) -> ModelSpec:
        """A model with the option ``draft_model`` (speculative decoding, on OpenVINO): the
        draft resolved (pulled, when allowed) like any model, its directory in the options. First
        the model's options are screened (``Loader.screen``): options no candidate engine reads
        are refused before a draft is pulled for them."""
        await anyio.to_thread.run_sync(self.loader.screen, spec, path)
        if DRAFT_PATH in spec.options:
            raise InvalidRequest(
                f"the model option {DRAFT_PATH} is set by the daemon for {DRAFT_MODEL}; name the draft "
                f"with {DRAFT_MODEL}",
                param=f"options.{DRAFT_PATH}",
            )
        draft = spec.options.get(DRAFT_MODEL)
        if not draft:
            return spec
        path = await anyio.to_thread.run_sync(self._resolve, ModelSpec(ref=str(draft)))
        return dataclasses.replace(spec, options={**spec.options, DRAFT_PATH: str(path)})

    def loading(self) -> list[dict[str, Any]]:
        """The loads in progress and their phase (``hfd.daemon.models.phases``)."""
        return self.loader.phases.rows()

    async def export(self, name: str, path: Path) -> dict[str, Any] | None:
        """Build the engine export a load of ``name`` (at ``path``) would need first here."""
        return await exporting.export_first(self.loader, self.spec(name), path)

    async def tune(self, name: str) -> dict[str, Any]:
        """Measure the candidate engines of ``name`` on this machine now, even if a ranking is
        stored (``hfd tune``); its loads then follow the ranking (``engine_choice``)."""
        if not self.settings.measure_engines:
            raise InvalidRequest("engine measurement is off here (measure_engines = false)", param="model")
        spec = self.spec(name)
        path = await anyio.to_thread.run_sync(self._resolve, spec)
        return await engine_choice.measure(self.loader, await self._with_draft(spec, path), path, force=True)

    async def measure(self, name: str, path: Path) -> dict[str, Any] | None:
        """Measure the candidate engines of ``name`` (at ``path``) unless a ranking is stored
        (at a pull, after its export, and at preload); None when measuring is off."""
        if not self.settings.measure_engines:
            return None
        spec = await self._with_draft(self.spec(name), path)
        return await engine_choice.measure(self.loader, spec, path)

    async def unload(self, name: str) -> bool:
        spec = self.spec(name)
        slot = self._slots.get(spec.public_name)
        if slot is None or slot.loaded is None:
            return False
        async with slot.lock:
            lm, slot.loaded = slot.loaded, None
            if lm is None:
                return False
            await self.residency.close(lm, grace=self.settings.grace_period)
        return True

    async def aclose(self, grace: float = 0.0) -> None:
        for slot in list(self._slots.values()):
            lm, slot.loaded = slot.loaded, None
            if lm is not None:
                await self.residency.close(lm, grace=grace)

    async def reap(self) -> list[str]:
        """Unload every idle model whose keep-alive has passed; returns their names."""
        return await self.residency.reap()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The keep-alive reaper (``Residency.run``)."""
        await self.residency.run(task_status=task_status)

    async def preload(self) -> None:
        for spec in self._specs.values():
            if spec.preload:
                if self.settings.measure_engines:  # before the load, so it follows the ranking
                    await self._measure_before_preload(spec)
                await self.load(spec.public_name)

    async def _measure_before_preload(self, spec: ModelSpec) -> None:
        """Measure ``spec``'s engines unless a ranking is stored; a failure here leaves the
        static order, and the load itself says what is wrong with the model."""
        try:
            path = await anyio.to_thread.run_sync(self._resolve, spec)
            await self.measure(spec.public_name, path)
        except Exception as exc:
            log.warning(
                "engine measurement before preload failed",
                extra={"model": spec.public_name, "error": _describe(exc)},
            )


def _verdict(exc: BaseException) -> bool | None:
    """What an exception says about the model: False a failure, None no evidence."""
    if isinstance(exc, HfdError):
        if isinstance(exc, (Cancelled, Overloaded, ModelUnavailable)) or exc.status < 500:
            return None
        return False
    if isinstance(exc, Exception):
        return False
    return None  # cancellation, GeneratorExit, KeyboardInterrupt


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HfdError) else f"{type(exc).__name__}: {exc}"
