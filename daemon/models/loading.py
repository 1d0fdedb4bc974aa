"""Loading a model: engine choice, fallback, the engines remembered as failing, and starting
the model's scheduler.

- Engines are tried in the order the policy gives for the detected hardware (fastest first),
  with the order measured on this machine ahead of it where one is stored (``engine_choice``);
  one that fails to load falls back to the next, with a log line saying why. An engine that
  cannot serve the model's family with the pinned versions is skipped untried.
- So is an engine that does not read one of the model's options (``hfd.backends.model_options``);
  a model with an option no engine reads, or whose options no candidate reads, is refused
  (``InvalidRequest`` naming the options) before any engine is tried.
- An engine that crashes natively while it is proven on the model (``EngineCrashed``), or
  whose engine process keeps dying at its first requests, is remembered per model, engine and
  machine (``hfd.daemon.models.engine_memory``) and skipped at once next time; ``hfd ps``
  shows the preferred engine and why another serves.
- A circuit breaker per (model, engine) (``hfd.daemon.models.breaker``) counts load failures;
  while open, the engine is skipped and the model answers ``ModelUnavailable`` at once.

As Ollama's scheduler takes its server constructor and GPU discovery as functions, ``Loader`` takes
the engine loader (``EngineLoader``) and hardware detector (``HardwareDetector``): tests pass fakes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from hfd.backends import families, load_progress, model_options, registry
from hfd.backends.base import EncoderModel, GenerationModel, LoadOptions, Task
from hfd.backends.openvino_speculative import DRAFT_PATH
from hfd.backends.proving import EngineCrashed
from hfd.backends.registry import get_backend
from hfd.client.errors import HfdError, InsufficientMemory, InvalidRequest, ModelUnavailable
from hfd.daemon.cache import snapshot_identity
from hfd.daemon.models import engine_choice, engine_info, exporting
from hfd.daemon.models.breaker import Breakers, CircuitBreaker
from hfd.daemon.models.engine_memory import EARLY_DEATHS, EARLY_REQUESTS, EngineMemory, record_key
from hfd.daemon.models.loaded import LoadedModel
from hfd.daemon.models.memory import ENGINE_PROCESS_BYTES, MemoryEstimate, estimate_model, weights_bytes
from hfd.daemon.models.phases import LoadPhases
from hfd.daemon.models.residency import Residency
from hfd.daemon.models.threads import engine_threads
from hfd.daemon.scheduler.base import GenerationStats, Scheduler
from hfd.daemon.scheduler.encoder import EncoderScheduler
from hfd.daemon.scheduler.generation import GenerationScheduler
from hfd.daemon.settings import ModelSpec, Settings
from hfd.daemon.store import gguf_tags
from hfd.daemon.tasks import registry as task_registry

if TYPE_CHECKING:
    from hfd.backends.hardware import HardwareReport

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Model = EncoderModel | GenerationModel
# Loads ``task`` with the named engine; runs in a worker thread (loads block).
EngineLoader = Callable[[str, Task, LoadOptions], Model]
# What the box has (CPU, memory, each engine's devices); the policy orders engines from it.
HardwareDetector = Callable[[], "HardwareReport"]


def load_engine(engine: str, task: Task, opts: LoadOptions) -> Model:
    """The default engine loader: the engine registered under ``engine``."""
    backend = get_backend(engine)
    # The task's record names the Backend method that loads it (load_encoder, load_generator).
    model: Model = getattr(backend, task_registry.record(task).loader)(opts)
    return model


def detect_hardware() -> HardwareReport:
    """The default hardware detector (cached after the first call)."""
    from hfd.backends import hardware

    return hardware.detect()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model was last loaded: enough to recompute its identity without loading it."""

    path: Path
    engine: str
    device: str
    extra: dict[str, Any]

    def identity(self) -> str:
        return snapshot_identity(self.path, engine=self.engine, device=self.device, options=self.extra)


class Loader:
    def __init__(
        self,
        settings: Settings,
        residency: Residency,
        breakers: Breakers,
        *,
        clock: Clock,
        counters: dict[str, int],
        load_engine: EngineLoader = load_engine,
        detect_hardware: HardwareDetector = detect_hardware,
    ) -> None:
        self.settings = settings
        self.residency = residency
        self.breakers = breakers
        self.engine_memory = EngineMemory(settings.state_dir)
        self.engine_choices = engine_choice.EngineChoices(settings.state_dir)  # measured orders
        self.recipes: dict[str, Recipe] = {}
        self.counters = counters
        self._clock = clock
        self._load_engine = load_engine
        self._detect_hardware = detect_hardware
        self._early_deaths: dict[str, int] = {}  # record key -> engine deaths at first requests
        self.phases = LoadPhases()  # what each load in progress is doing, for `hfd ps`

    async def load(self, spec: ModelSpec, path: Path) -> LoadedModel:
        """Load the model at ``path`` with the first engine that works, reserving its memory."""
        started = time.perf_counter()
        name = spec.public_name
        budgets = self.residency.budgets
        task: Task = task_registry.task_for(spec.task, path, name)
        errors: list[str] = []
        skipped: list[CircuitBreaker] = []
        too_big: list[InsufficientMemory] = []
        candidates = await anyio.to_thread.run_sync(self.candidates, task, spec, path)
        asked = self.screen_options(spec, path, task, candidates)
        family = families.model_type(path)
        for engine, device, reason in candidates:
            gap = untried(engine, task, family, asked)
            if gap is not None:  # this engine cannot serve the model here: skipped untried
                errors.append(f"{engine}/{device}: {gap}")
                log.info("skipping an engine untried",
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
            opts = self.options(spec, path, task, device, engine)
            estimate = await anyio.to_thread.run_sync(self.estimate, path, task, engine, opts)
            pool = budgets.pool(device)
            try:
                await self.residency.make_room(name, pool, estimate.total, estimate)
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
                    model = await anyio.to_thread.run_sync(self._start, name, engine, task, opts)
                except EngineCrashed as exc:
                    # A native crash proving the engine: no breaker (another engine may serve
                    # the model), but remembered, so the next load skips this engine at once.
                    budgets.release(name)
                    self.residency.notify()
                    if probe:
                        breaker.release()
                    self.counters["load_failures"] += 1
                    errors.append(f"{engine}/{device}: {exc.message}")
                    self.engine_memory.remember(key, model=name, engine=engine, device=device, reason=exc.message,
                                                threads=opts.threads, dtype=opts.dtype)  # fmt: skip
                    continue
                except HfdError as exc:
                    budgets.release(name)
                    self.residency.notify()
                    if exc.status < 500:
                        if probe:
                            breaker.release()
                        raise
                    self._failed(breaker, spec, engine, device, exc.message, errors)
                    continue
                except Exception as exc:  # an engine's own failure: fall back to the next engine
                    budgets.release(name)
                    self.residency.notify()
                    self._failed(breaker, spec, engine, device, f"{type(exc).__name__}: {exc}", errors)
                    continue
                breaker.success()
                lm = self._loaded(
                    spec, task, engine, device, path, opts, model, estimate, pool, breaker, started, reason
                )
                self._served_by(lm, candidates[0][0], errors, key, opts, reason)
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

    def candidates(self, task: Task, spec: ModelSpec, path: Path | None = None) -> list[tuple[str, str, str]]:
        """(engine, device, why) in the order to try them, pins from the model or settings; with
        the model's ``path``, the order measured on this machine first (``engine_choice``)."""
        from hfd.backends import policy

        engine = spec.engine or self.settings.engine
        device = spec.device or self.settings.device
        record = task_registry.record(task)
        if engine is not None and not record.runs_on(engine):
            raise InvalidRequest(f"engine {engine!r} cannot {task}", param="engine")
        # Ranked by the engine-level task whose measurements apply (an encoder head ranks as
        # embed), then kept to the engines that can run this task.
        choices = policy.choose_engine(
            record.engine_task, self._detect_hardware(), pinned_engine=engine, pinned_device=device
        )
        kept = [(c.engine, c.device, c.reason) for c in choices if record.runs_on(c.engine)]
        if not kept:
            raise ModelUnavailable(f"no engine installed can {task}; install hfd[torch]")
        return kept if path is None else engine_choice.ordered(self, spec, path, task, kept)

    def screen(self, spec: ModelSpec, path: Path) -> None:
        """Refuse a model whose options no candidate engine reads (``screen_options``) before
        anything is pulled for it (its draft model) or any engine is tried."""
        task = task_registry.task_for(spec.task, path, spec.public_name)
        self.screen_options(spec, path, task, self.candidates(task, spec))

    def screen_options(
        self, spec: ModelSpec, path: Path, task: Task, candidates: list[tuple[str, str, str]]
    ) -> dict[str, Any]:
        """The model options a load of ``spec`` asks for (``asked_options``), once no name is
        unknown or of another task and one of the ``candidates`` reads them all; else
        ``InvalidRequest`` naming the options and the engines that read them."""
        asked = asked_options(spec, path)
        model_options.check_names(asked, task, keys=MODEL_KEYS)
        refusal = model_options.refusal(asked, [engine for engine, _, _ in candidates])
        if refusal is not None:
            raise refusal
        return asked

    def options(
        self, spec: ModelSpec, path: Path, task: Task, device: str, engine: str | None = None
    ) -> LoadOptions:
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
            stream_interval_ms=self.settings.stream_interval_ms,
            cache_dir=self.settings.cache_dir,
            extra={
                "allow_pickle": spec.allow_pickle,
                "prefix_caching": self.settings.prefix_caching,
                **gguf_tags.load_option(spec.ref, path),  # org/name:Q4_K_M: that tag's file
                **dict(spec.options),
            },
        )

    def estimate(self, path: Path, task: Task, engine: str, opts: LoadOptions) -> MemoryEstimate:
        s = self.settings
        estimate = estimate_model(
            path, task, load_dtype=_load_dtype(engine, opts), max_running=opts.max_running,
            context_tokens=s.memory_context_tokens, max_batched_tokens=opts.max_batched_tokens,
            encoder_batch_tokens=s.encoder_batch_tokens, encoder_max_batch=s.encoder_max_batch,
            gguf_file=opts.extra.get("gguf_file"),
        )  # fmt: skip
        draft = opts.extra.get(DRAFT_PATH)  # speculative decoding: the draft's weights are held too
        if draft:
            extra = weights_bytes(Path(draft), _load_dtype(engine, opts))
            estimate = dataclasses.replace(estimate, weights=estimate.weights + extra)
        if _own_process(engine, task, opts):
            estimate = dataclasses.replace(estimate, overhead=estimate.overhead + ENGINE_PROCESS_BYTES)
        return estimate

    def engine_died(self, dead: LoadedModel) -> None:
        """An engine process that keeps dying before it has served a few requests cannot serve
        the model here: after ``EARLY_DEATHS`` such deaths it is remembered as failing, and the
        next load falls back to the next engine."""
        try:
            stats = dead.scheduler.stats()
            # Only generation counts finished requests; an encoder's death says nothing early.
            finished = stats.requests_finished if isinstance(stats, GenerationStats) else EARLY_REQUESTS
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

    def _start(self, name: str, engine: str, task: Task, opts: LoadOptions) -> Model:
        """In a worker thread: the engine's export (its own phase in ``hfd ps``), then the load."""

        def entered(phase: load_progress.Phase) -> None:  # the engine compiles, then warms up
            self.phases.enter(name, phase, task=task, engine=engine, device=opts.device)

        with exporting.imports_for(engine, task):
            # An injected engine loader (a test's) builds nothing: only the real one reads exports.
            if self._load_engine is load_engine and exporting.exports(engine, task):
                self.phases.enter(name, "exporting", task=task, engine=engine, device=opts.device)
                exporting.export(engine, opts, self.counters)
            self.phases.enter(name, "loading", task=task, engine=engine, device=opts.device)
            with load_progress.reporting(entered):
                return self._load_engine(engine, task, opts)

    def _record_key(self, spec: ModelSpec, path: Path, task: Task, engine: str, device: str) -> str:
        opts = self.options(spec, path, task, device, engine)
        return record_key(path, engine, device, opts.threads, opts.dtype)

    def _served_by(
        self, lm: LoadedModel, preferred: str, errors: list[str], key: str, opts: LoadOptions, reason: str
    ) -> None:
        """Say which engine serves, which was preferred and why that one is not serving."""
        lm.preferred_engine = preferred
        lm.engine_reason = reason
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
        model: Model, estimate: MemoryEstimate, pool: str, breaker: CircuitBreaker, started: float, reason: str,
    ) -> LoadedModel:  # fmt: skip
        name = spec.public_name
        scheduler = self._scheduler(spec, task, model)
        scheduler.start()
        try:
            measured = int(model.memory_bytes())
        except Exception:
            measured = 0
        reserved = max(estimate.total, measured)
        self.residency.budgets.reserve(name, pool, reserved)
        if reserved > estimate.total:
            log.warning(
                "model uses more memory than estimated",
                extra={"model": name, "estimated": estimate.total, "measured": measured},
            )
        recipe = Recipe(path=path, engine=engine, device=device, extra=dict(opts.extra))
        identity = recipe.identity()
        self.recipes[name] = recipe
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
            keep_alive=self.residency.default_keep_alive(spec), last_used=now, estimate=estimate, pool=pool,
            reserved_bytes=reserved, identity=identity, breaker=breaker,
        )  # fmt: skip

    def _scheduler(self, spec: ModelSpec, task: Task, model: Model) -> Scheduler:
        s = self.settings
        if task_registry.record(task).scheduler == "media":  # speech, image-text: one at a time
            from hfd.daemon.media_worker import MediaScheduler

            return MediaScheduler(model, name=spec.public_name, max_queue=s.max_queue)
        if task_registry.record(task).scheduler == "generation":
            assert isinstance(model, GenerationModel)
            return GenerationScheduler(
                model,
                name=spec.public_name,
                max_queue=s.max_queue,
                max_running=spec.max_running or s.max_running,
                stream_interval_ms=s.stream_interval_ms,
            )
        assert isinstance(model, EncoderModel)
        return EncoderScheduler(
            model,
            name=spec.public_name,
            max_queue=s.max_queue,
            max_batch=s.encoder_max_batch,
            batch_tokens=s.encoder_batch_tokens,
            wait_ms=s.encoder_batch_wait_ms,
        )


# The [[models]] keys beside ``options``: an option named as one of them is refused naming the key.
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSpec) if f.name != "options")


def asked_options(spec: ModelSpec, path: Path) -> dict[str, Any]:
    """The model options a load of ``spec`` asks for: its ``options``, and the GGUF file of an
    ``org/name:TAG`` reference (the user named that file); less the draft model's directory,
    which the model manager adds for the draft it resolved."""
    asked = {**gguf_tags.load_option(spec.ref, path), **spec.options}
    asked.pop(DRAFT_PATH, None)
    return asked


def untried(engine: str, task: Task, family: str | None, asked: dict[str, Any]) -> str | None:
    """Why a load skips ``engine`` untried: a model family it cannot serve with the pinned
    versions, or a model option it does not read; None when it is to be tried."""
    gap = families.gap(engine, task_registry.record(task).engine_task, family)
    return gap if gap is not None else model_options.why_unread(engine, asked)


def _own_process(engine: str, task: Task, opts: LoadOptions) -> bool:
    """The engine will run in a process of its own, as its registry record says (OpenVINO
    generation, unless the model's ``pipeline_process`` option says otherwise)."""
    return registry.own_process(engine, task, opts)


def _load_dtype(engine: str, opts: LoadOptions) -> str | None:
    """The dtype an engine will hold the weights in, for the estimate (its registry record)."""
    return registry.load_dtype(engine, opts)
