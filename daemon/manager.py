"""The model manager: which models exist, which are loaded, and loading them on demand.

- A model loads on first use; concurrent requests for a model that is loading wait for that
  one load, and share its outcome (one lock per model).
- Memory: before loading, the manager estimates what the model will use (``hfd.daemon.memory``)
  and reserves it in the budget of the device's memory pool. When the pool is full it unloads
  the least recently used idle models; a model in use is never unloaded. When everything else
  is busy it waits (``memory_wait_timeout``) for a model to become idle, then refuses with
  ``ModelUnavailable`` and a Retry-After. A model larger than the whole budget is refused with
  ``InsufficientMemory``.
- ``acquire(name)`` is an async context manager: while a request holds a model, it is never
  unloaded; when the last holder leaves, the model's keep-alive starts.
- ``keep_alive``: seconds an idle model stays loaded; per model (``[[models]] keep_alive``,
  else ``default_keep_alive``) and per request, as in Ollama: the last request to finish sets
  the timer; 0 unloads after the request; negative keeps it loaded. A reaper task unloads
  expired models.
- Engines are tried in the order the policy gives (fastest first); one that fails to load
  falls back to the next, with a log line saying why. An engine that crashes natively while it
  is proven on the model (``EngineCrashed``), or whose engine process keeps dying at its first
  requests, is remembered per model, engine and machine (``hfd.daemon.engine_memory``) and
  skipped at once next time; ``hfd ps`` shows the preferred engine and why another serves.
- A circuit breaker per (model, engine) (``hfd.daemon.breaker``) counts load failures and
  engine errors during requests; while open, the model answers ``ModelUnavailable`` at once.

Time comes from an injectable clock so tests drive keep-alive and breakers without sleeping.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from hfd.backends import families
from hfd.backends.base import EncoderModel, GenerationModel, LoadOptions, Task
from hfd.backends.proving import EngineCrashed
from hfd.backends.registry import get_backend
from hfd.client.errors import (
    Cancelled,
    HfdError,
    InsufficientMemory,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
)
from hfd.daemon import engine_info
from hfd.daemon.breaker import Breakers, CircuitBreaker
from hfd.daemon.cache import snapshot_identity
from hfd.daemon.engine_memory import EARLY_DEATHS, EARLY_REQUESTS, EngineMemory, record_key
from hfd.daemon.memory import (
    ENGINE_PROCESS_BYTES,
    Budgets,
    MemoryEstimate,
    default_budgets,
    estimate_model,
    human,
    release_to_os,
)
from hfd.daemon.settings import ModelSpec, Settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Retry-After given when a load is refused because every other model is busy: about the time a
# typical request takes to finish and free its model.
BUSY_RETRY_AFTER = 5.0


@dataclass
class LoadedModel:
    spec: ModelSpec
    name: str
    task: Task
    engine: str
    device: str
    path: Path
    model: EncoderModel | GenerationModel
    scheduler: Any  # GenerationScheduler | EncoderScheduler
    loaded_at: float
    load_seconds: float
    keep_alive: float
    last_used: float
    in_use: int = 0
    expires_at: float | None = None  # None while in use or kept forever
    estimate: MemoryEstimate | None = None
    pool: str = "ram"  # the memory pool its reservation is in
    reserved_bytes: int = 0
    identity: str = ""  # snapshot identity: the response cache's model key
    breaker: CircuitBreaker | None = None
    # The engine the policy preferred, and why the one serving is another ("" / None: it is).
    preferred_engine: str = ""
    fallback_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # precision, weight_format, threads
    record_key: str = ""  # its engine-failure record key (hfd.daemon.engine_memory)

    def info(self, now: float) -> dict[str, Any]:
        """One row of ``hfd ps``."""
        expires_in = None if self.expires_at is None else max(0.0, self.expires_at - now)
        return {
            "name": self.name,
            "task": self.task,
            "engine": self.engine,
            "device": self.device,
            "path": str(self.path),
            "memory_bytes": self._measured(),
            "memory_estimate": self.estimate.to_dict() if self.estimate else None,
            "memory_reserved_bytes": self.reserved_bytes,
            "memory_pool": self.pool,
            "in_use": self.in_use,
            "load_seconds": round(self.load_seconds, 3),
            "keep_alive": self.keep_alive,
            "expires_in": None if expires_in is None else round(expires_in, 3),
            # Wall-clock time of the unload, for display; None while in use or kept forever.
            "expires_at": None if expires_in is None else round(time.time() + expires_in, 3),
            "breaker": self.breaker.info() if self.breaker else {"state": "closed"},
            "scheduler": self.scheduler.stats(),
            "preferred_engine": self.preferred_engine or self.engine,
            "fallback_reason": self.fallback_reason,
            **self.details,
            "kv_cache": engine_info.kv_cache(self.model),
        }

    def _measured(self) -> int:
        try:
            return int(self.model.memory_bytes())
        except Exception:  # an engine that cannot tell must not break `hfd ps`
            return 0


def detect_task(path: Path) -> Task:
    """generate for causal LMs, embed for encoders, from config.json's architectures."""
    # Paths go to the log only: client-facing messages must not disclose the filesystem.
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        log.warning("model directory has no config.json", extra={"path": str(path)})
        raise ModelUnavailable("the model's files have no config.json; is it a model directory?") from None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the model's config.json", extra={"path": str(path), "error": str(exc)})
        raise ModelUnavailable(f"cannot read the model's config.json ({type(exc).__name__})") from exc
    archs = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "generate"
    return "embed"


@dataclass
class _Slot:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    loaded: LoadedModel | None = None
    attempts: int = 0  # loads started; waiters compare it to share a failed load's error
    error: HfdError | None = None  # the last failed load's error


@dataclass(frozen=True)
class _Recipe:
    """How a model was last loaded: enough to recompute its identity without loading it."""

    path: Path
    engine: str
    device: str
    extra: dict[str, Any]


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Callable[[ModelSpec], Path] | None = None,
        clock: Clock = time.monotonic,
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        self._resolve = resolve or _resolve_local
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._specs: dict[str, ModelSpec] = {s.public_name: s for s in settings.models}
        self._wake = anyio.Event()
        self._budgets = budgets
        self.breakers = Breakers(
            threshold=settings.breaker_failures, cooldown=settings.breaker_cooldown, clock=clock
        )
        self._room = anyio.Lock()  # one load at a time decides what to evict
        self._changed = anyio.Event()  # set when a model becomes idle or memory is released
        self._recipes: dict[str, _Recipe] = {}
        self.engine_memory = EngineMemory(settings.state_dir)
        self._early_deaths: dict[str, int] = {}  # record key -> engine deaths at first requests
        self.counters = {"loads": 0, "load_failures": 0, "unloads": 0, "evictions": 0, "refused": 0}

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
        return [s.loaded for s in self._slots.values() if s.loaded is not None]

    def now(self) -> float:
        return self._clock()

    @property
    def budgets(self) -> Budgets:
        if self._budgets is None:
            s = self.settings
            self._budgets = default_budgets(s.memory_budget_bytes, s.gpu_memory_budget_bytes)
            log.info(
                "memory budgets", extra={"budgets": {k: human(v) for k, v in self._budgets.limits.items()}}
            )
        return self._budgets

    def identity(self, name: str) -> str | None:
        """The snapshot identity of a model (for the response cache) without loading it: the
        loaded model's, else recomputed from how it was last loaded; None if never loaded."""
        spec = self.spec(name)
        slot = self._slots.get(spec.public_name)
        if slot is not None and slot.loaded is not None:
            return slot.loaded.identity
        recipe = self._recipes.get(spec.public_name)
        if recipe is None:
            return None
        try:
            return snapshot_identity(
                recipe.path, engine=recipe.engine, device=recipe.device, options=recipe.extra
            )
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
        _check_keep_alive(keep_alive)
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
            lm.keep_alive = keep_alive if keep_alive is not None else self._default_keep_alive(lm.spec)
            if lm.in_use == 0:
                self._arm(lm)
                self._notify()

    async def load(self, name: str, keep_alive: float | None = None) -> LoadedModel:
        spec = self.spec(name)
        _check_keep_alive(keep_alive)
        slot = self._slots.setdefault(spec.public_name, _Slot())
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

    async def _load_slot(self, spec: ModelSpec, slot: _Slot, keep_alive: float | None) -> LoadedModel:
        dead = slot.loaded
        if dead is not None and not getattr(dead.model, "alive", True):
            # An engine that lives in another process can die on its own (OOM killer, a crash);
            # its requests have failed already. Drop it, and load the model afresh below.
            async with slot.lock:
                if slot.loaded is dead:
                    slot.loaded = None
                    log.warning("model engine is gone; loading the model again", extra={"model": dead.name})
                    self._engine_died(dead)
                    await self._close(dead, grace=0.0)
        if slot.loaded is not None:
            if keep_alive is not None:
                self._keep(slot.loaded, keep_alive)
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
                self._arm(slot.loaded)
        lm = slot.loaded
        if keep_alive is not None:
            self._keep(lm, keep_alive)
        return lm

    async def unload(self, name: str) -> bool:
        spec = self.spec(name)
        slot = self._slots.get(spec.public_name)
        if slot is None or slot.loaded is None:
            return False
        async with slot.lock:
            lm, slot.loaded = slot.loaded, None
            if lm is None:
                return False
            await self._close(lm, grace=self.settings.grace_period)
        return True

    async def aclose(self, grace: float = 0.0) -> None:
        for slot in list(self._slots.values()):
            lm, slot.loaded = slot.loaded, None
            if lm is not None:
                await self._close(lm, grace=grace)

    # ----------------------------------------------------------------- keep-alive

    def _default_keep_alive(self, spec: ModelSpec) -> float:
        return spec.keep_alive if spec.keep_alive is not None else self.settings.default_keep_alive

    def _keep(self, lm: LoadedModel, keep_alive: float) -> None:
        lm.keep_alive = keep_alive
        self._arm(lm)

    def _arm(self, lm: LoadedModel) -> None:
        if lm.in_use:
            return
        lm.expires_at = None if lm.keep_alive < 0 else self._clock() + lm.keep_alive
        self._wake.set()

    async def reap(self) -> list[str]:
        """Unload every idle model whose keep-alive has passed; returns their names."""
        now = self._clock()
        gone = []
        for name, slot in list(self._slots.items()):
            lm = slot.loaded
            if lm is not None and lm.in_use == 0 and lm.expires_at is not None and lm.expires_at <= now:
                async with slot.lock:
                    if slot.loaded is lm and lm.in_use == 0:
                        slot.loaded = None
                        await self._close(lm, grace=0.0)
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

    async def preload(self) -> None:
        for spec in self._specs.values():
            if spec.preload:
                await self.load(spec.public_name)

    # ----------------------------------------------------------------- memory

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _make_room(self, name: str, pool: str, need: int, estimate: MemoryEstimate) -> None:
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
        slot = self._slots[lm.name]
        async with slot.lock:
            if slot.loaded is lm and lm.in_use == 0:
                slot.loaded = None
                log.info(
                    "unloading the least recently used idle model to make room",
                    extra={"model": lm.name, "pool": lm.pool},
                )
                self.counters["evictions"] += 1
                await self._close(lm, grace=0.0)

    # ----------------------------------------------------------------- loading

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        started = time.perf_counter()
        name = spec.public_name
        path = await anyio.to_thread.run_sync(self._resolve, spec)
        # Resolved in the store (or pulled): from now on the name is one of the daemon's models.
        self._specs.setdefault(name, spec)
        task: Task
        if spec.task is not None:
            if spec.task not in ("generate", "embed"):
                raise InvalidRequest(f"model {name!r}: task must be generate or embed")
            task = spec.task  # type: ignore[assignment]
        else:
            task = detect_task(path)
        errors: list[str] = []
        skipped: list[CircuitBreaker] = []
        too_big: list[InsufficientMemory] = []
        candidates = self._candidates(task, spec)
        family = families.model_type(path)
        for engine, device, reason in candidates:
            gap = families.gap(engine, task, family)
            if gap is not None:  # this engine cannot serve the family here: skipped untried
                errors.append(f"{engine}/{device}: {gap}")
                log.info("skipping an engine that cannot serve this model family",
                         extra={"model": name, "engine": engine, "model_type": family, "reason": gap})  # fmt: skip
                continue
            key = await anyio.to_thread.run_sync(self._record_key, spec, path, task, engine, device)
            known = self.engine_memory.get(key)
            if known is not None:  # this engine crashed on this model here before: skip it
                errors.append(f"{engine}/{device}: {known.get('reason')} (remembered)")
                log.info("skipping an engine known to fail on this model here",
                         extra={"model": name, "engine": engine, "reason": known.get("reason")})  # fmt: skip
                continue
            breaker = self.breakers.get(name, engine)
            allowed, probe = breaker.allow()
            if not allowed:
                skipped.append(breaker)
                errors.append(f"{engine}/{device}: circuit breaker open")
                continue
            opts = self._options(spec, path, task, device, engine)
            estimate = await anyio.to_thread.run_sync(self._estimate, path, task, engine, opts)
            pool = self.budgets.pool(device)
            try:
                await self._make_room(name, pool, estimate.total, estimate)
            except InsufficientMemory as exc:
                # Too big for this device's budget: the next candidate may use another pool.
                if probe:
                    breaker.release()
                too_big.append(exc)
                errors.append(f"{engine}/{device}: {exc.message}")
                continue
            except BaseException:
                if probe:
                    breaker.release()
                raise
            # Engines that size their own KV cache (OpenVINO's paged cache) get what was reserved.
            opts = dataclasses.replace(opts, extra={**opts.extra, "kv_cache_bytes": estimate.kv_cache})
            # A load cannot be interrupted (it runs in a thread) and may be shared with other
            # waiters: finish it and its bookkeeping even if the caller is cancelled meanwhile.
            with anyio.CancelScope(shield=True):
                try:
                    model = await self._load_engine(engine, task, opts)
                except EngineCrashed as exc:
                    # A native crash proving the engine: no breaker (another engine may serve
                    # the model), but remembered, so the next load skips this engine at once.
                    self.budgets.release(name)
                    self._notify()
                    if probe:
                        breaker.release()
                    self.counters["load_failures"] += 1
                    errors.append(f"{engine}/{device}: {exc.message}")
                    self.engine_memory.remember(key, model=name, engine=engine, device=device, reason=exc.message,
                                                threads=opts.threads, dtype=opts.dtype)  # fmt: skip
                    continue
                except HfdError as exc:
                    self.budgets.release(name)
                    self._notify()
                    if exc.status < 500:
                        if probe:
                            breaker.release()
                        raise
                    self._failed(breaker, spec, engine, device, exc.message, errors)
                    continue
                except Exception as exc:  # an engine's own failure: fall back to the next engine
                    self.budgets.release(name)
                    self._notify()
                    self._failed(breaker, spec, engine, device, f"{type(exc).__name__}: {exc}", errors)
                    continue
                breaker.success()
                lm = self._loaded(
                    spec, task, engine, device, path, opts, model, estimate, pool, breaker, started, reason
                )
                self._served_by(lm, candidates[0][0], errors, key, opts)
                return lm
        if too_big and len(too_big) == len(errors):
            raise too_big[0]
        if skipped and len(skipped) == len(errors):
            raise min(skipped, key=lambda b: b.retry_after()).unavailable()
        retry = [b.retry_after() for b in self.breakers.of(name) if b.state == "open"]
        raise ModelUnavailable(
            f"model {name!r} could not be loaded: " + "; ".join(errors),
            retry_after=round(min(retry), 3) if retry else None,
        )

    def _record_key(self, spec: ModelSpec, path: Path, task: Task, engine: str, device: str) -> str:
        opts = self._options(spec, path, task, device, engine)
        return record_key(path, engine, device, opts.threads, opts.dtype)

    def _served_by(
        self, lm: LoadedModel, preferred: str, errors: list[str], key: str, opts: LoadOptions
    ) -> None:
        """Say which engine serves, which was preferred and why that one is not serving."""
        lm.preferred_engine = preferred
        lm.record_key = key
        lm.details = engine_info.engine_details(lm.model, lm.engine, opts)
        if lm.engine != preferred:
            lm.fallback_reason = "; ".join(errors) or None
            log.warning(
                "model served by a fallback engine",
                extra={"model": lm.name, "engine": lm.engine, "preferred_engine": preferred,
                       "fallback_reason": lm.fallback_reason},
            )  # fmt: skip
        log.info("model engine", extra={"model": lm.name, "engine": lm.engine, **lm.details})

    def _engine_died(self, dead: LoadedModel) -> None:
        """An engine process that keeps dying before it has served a few requests cannot serve
        the model here: after ``EARLY_DEATHS`` such deaths it is remembered as failing, and the
        next load falls back to the next engine."""
        try:
            finished = int(dead.scheduler.stats().get("requests_finished", EARLY_REQUESTS))
        except Exception:
            finished = EARLY_REQUESTS
        if not dead.record_key or finished >= EARLY_REQUESTS:
            self._early_deaths.pop(dead.record_key, None)
            return
        deaths = self._early_deaths.get(dead.record_key, 0) + 1
        self._early_deaths[dead.record_key] = deaths
        if deaths >= EARLY_DEATHS:
            self._early_deaths.pop(dead.record_key, None)
            self.engine_memory.remember(
                dead.record_key, model=dead.name, engine=dead.engine, device=dead.device,
                reason=f"the engine process died {deaths} times within its first {EARLY_REQUESTS} requests",
            )  # fmt: skip

    async def _load_engine(
        self, engine: str, task: Task, opts: LoadOptions
    ) -> EncoderModel | GenerationModel:
        backend = get_backend(engine)
        if task == "generate":
            return await anyio.to_thread.run_sync(backend.load_generator, opts)
        return await anyio.to_thread.run_sync(backend.load_encoder, opts)

    def _failed(
        self,
        breaker: CircuitBreaker,
        spec: ModelSpec,
        engine: str,
        device: str,
        message: str,
        errors: list[str],
    ) -> None:
        self.counters["load_failures"] += 1
        breaker.failure(message)
        errors.append(f"{engine}/{device}: {message}")
        log.warning(
            "engine failed to load model, trying the next",
            extra={"model": spec.public_name, "engine": engine, "error": message, "breaker": breaker.state},
        )

    def _loaded(
        self, spec: ModelSpec, task: Task, engine: str, device: str, path: Path, opts: LoadOptions,
        model: EncoderModel | GenerationModel, estimate: MemoryEstimate, pool: str, breaker: CircuitBreaker,
        started: float, reason: str,
    ) -> LoadedModel:  # fmt: skip
        name = spec.public_name
        scheduler = self._scheduler(spec, task, model)
        scheduler.start()
        try:
            measured = int(model.memory_bytes())
        except Exception:
            measured = 0
        reserved = max(estimate.total, measured)
        self.budgets.reserve(name, pool, reserved)
        if reserved > estimate.total:
            log.warning(
                "model uses more memory than estimated",
                extra={"model": name, "estimated": estimate.total, "measured": measured},
            )
        identity = snapshot_identity(path, engine=engine, device=device, options=opts.extra)
        self._recipes[name] = _Recipe(path=path, engine=engine, device=device, extra=dict(opts.extra))
        seconds = time.perf_counter() - started
        now = self._clock()
        self.counters["loads"] += 1
        log.info(
            "model loaded",
            extra={"model": name, "engine": engine, "device": device, "seconds": round(seconds, 3), "why": reason,
                   "estimated_bytes": estimate.total, "measured_bytes": measured, "pool": pool},
        )  # fmt: skip
        return LoadedModel(
            spec=spec, name=name, task=task, engine=engine, device=device, path=path,
            model=model, scheduler=scheduler, loaded_at=now, load_seconds=seconds,
            keep_alive=self._default_keep_alive(spec), last_used=now, estimate=estimate, pool=pool,
            reserved_bytes=reserved, identity=identity, breaker=breaker,
        )  # fmt: skip

    def _estimate(self, path: Path, task: Task, engine: str, opts: LoadOptions) -> MemoryEstimate:
        s = self.settings
        estimate = estimate_model(
            path, task, load_dtype=_load_dtype(engine, opts), max_running=opts.max_running,
            context_tokens=s.memory_context_tokens, max_batched_tokens=opts.max_batched_tokens,
            encoder_batch_tokens=s.encoder_batch_tokens, encoder_max_batch=s.encoder_max_batch,
        )  # fmt: skip
        if _own_process(engine, task, opts):
            estimate = dataclasses.replace(estimate, overhead=estimate.overhead + ENGINE_PROCESS_BYTES)
        return estimate

    def _candidates(self, task: Task, spec: ModelSpec) -> list[tuple[str, str, str]]:
        engine = spec.engine or self.settings.engine
        device = spec.device or self.settings.device
        try:
            from hfd.backends import hardware, policy
        except ImportError:
            return [(engine or "torch", device or "cpu", "default")]
        choices = policy.choose_engine(task, hardware.detect(), pinned_engine=engine, pinned_device=device)
        return [(c.engine, c.device, c.reason) for c in choices]

    def _options(
        self, spec: ModelSpec, path: Path, task: Task, device: str, engine: str | None = None
    ) -> LoadOptions:
        from hfd.daemon.threads import engine_threads

        dtype = spec.options.get("dtype")
        return LoadOptions(
            path=path,
            task=task,
            device=device,
            threads=engine_threads(self.settings, spec, engine, device),
            dtype=str(dtype) if dtype else None,
            weight_format=spec.weight_format,
            trust_remote_code=spec.trust_remote_code,
            max_running=spec.max_running or self.settings.max_running,
            max_batched_tokens=self.settings.max_batched_tokens,
            cache_dir=self.settings.cache_dir,
            extra={
                "allow_pickle": spec.allow_pickle,
                "prefix_caching": self.settings.prefix_caching,
                **dict(spec.options),
            },
        )

    def _scheduler(self, spec: ModelSpec, task: Task, model: EncoderModel | GenerationModel) -> Any:
        s = self.settings
        if task == "generate":
            from hfd.daemon.scheduler.generation import GenerationScheduler

            assert isinstance(model, GenerationModel)
            return GenerationScheduler(
                model,
                name=spec.public_name,
                max_queue=s.max_queue,
                max_running=spec.max_running or s.max_running,
            )
        from hfd.daemon.scheduler.encoder import EncoderScheduler

        assert isinstance(model, EncoderModel)
        return EncoderScheduler(
            model,
            name=spec.public_name,
            max_queue=s.max_queue,
            max_batch=s.encoder_max_batch,
            batch_tokens=s.encoder_batch_tokens,
            wait_ms=s.encoder_batch_wait_ms,
        )

    async def _close(self, lm: LoadedModel, grace: float) -> None:
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
            self._notify()
        log.info("model unloaded", extra={"model": lm.name})


def _own_process(engine: str, task: Task, opts: LoadOptions) -> bool:
    """The engine will run in a process of its own (OpenVINO generation, unless the model's
    ``pipeline_process`` option says otherwise)."""
    return engine == "openvino" and task == "generate" and opts.flag("pipeline_process", True)


def _load_dtype(engine: str, opts: LoadOptions) -> str | None:
    """The dtype an engine will hold the weights in, for the estimate."""
    if opts.dtype:
        return opts.dtype
    if engine == "openvino":
        return opts.weight_format or "fp32"
    if engine == "torch":
        # The torch engine's defaults: fp32 on CPUs, fp16 on accelerators.
        return "float32" if opts.device.lower() in ("cpu", "") else "float16"
    return None


def _verdict(exc: BaseException) -> bool | None:
    """What an exception says about the model: False a failure, None no evidence."""
    if isinstance(exc, HfdError):
        if isinstance(exc, (Cancelled, Overloaded, ModelUnavailable)) or exc.status < 500:
            return None
        return False
    if isinstance(exc, Exception):
        return False
    return None  # cancellation, GeneratorExit, KeyboardInterrupt


# An absolute or home-relative path of two or more parts, not inside a word, URL or ref
# ("org/name", "torch/cpu" and "ipfs://cid" are left alone).
_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`,;()\[\]]+/[^\s'\"`,;()\[\]]*")


def hide_paths(message: str) -> str:
    """``message`` with filesystem paths replaced by ``<path>``, for client-facing errors."""
    return _PATH.sub("<path>", message)


def _check_keep_alive(keep_alive: float | None) -> None:
    """Refuse a keep-alive that is not a finite number: NaN never compares, so a model kept
    with it would never expire and its ``hfd ps`` row could not be serialised. The doors'
    schema refuses these already; this guards every other caller."""
    if keep_alive is not None and not math.isfinite(keep_alive):
        raise InvalidRequest(f"keep_alive must be a finite number, not {keep_alive!r}", param="keep_alive")


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HfdError) else f"{type(exc).__name__}: {exc}"


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")


def is_store_ref(name: str) -> bool:
    """``org/name[@revision]`` or ``ipfs://<cid>``: a reference the store can resolve."""
    if name.startswith("ipfs://"):
        return len(name) > len("ipfs://") and "/" not in name[len("ipfs://") :]
    return bool(_REPO_ID.match(name)) and ".." not in name


def _resolve_local(spec: ModelSpec) -> Path:
    """A local directory, or a repo id already in the local Hugging Face cache. Errors name the
    model, not where it was looked for: paths go to the log, never to a client."""
    candidate = Path(spec.ref).expanduser()
    if candidate.is_dir():
        return candidate
    if spec.ref.count("/") == 1 and not spec.ref.startswith(("/", ".", "~")):
        repo, _, revision = spec.ref.partition("@")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo, revision=revision or None, local_files_only=True))
        except Exception as exc:
            log.warning(
                "model is not in the local Hugging Face cache", extra={"model": spec.ref, "error": str(exc)}
            )
            raise ModelNotFound(
                f"model {spec.ref!r} is not in the local Hugging Face cache", param="model"
            ) from exc
    log.warning(
        "model reference is neither a directory nor org/name",
        extra={"model": spec.public_name, "ref": spec.ref},
    )
    raise ModelNotFound(
        f"model {spec.public_name!r} is not available: its files are missing (the daemon's log says where it looked)",
        param="model",
    )
