"""The model manager: which models exist, which are loaded, and loading them on demand.

- A model loads on first use; concurrent requests for a model that is loading wait for that
  one load (one lock per model).
- ``acquire(name)`` is an async context manager: while a request holds a model, it is never
  unloaded; when the last holder leaves, the model's keep-alive starts.
- ``keep_alive``: seconds an idle model stays loaded (per model, per request; 0 unloads after
  the request; negative keeps it forever). A reaper task unloads expired models.
- Engines are tried in the order the policy gives (fastest first); one that fails to load
  falls back to the next, with a log line saying why.

Time comes from an injectable clock so tests drive keep-alive without sleeping.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from hfd.backends.base import EncoderModel, GenerationModel, LoadOptions, Task
from hfd.backends.registry import get_backend
from hfd.client.errors import HfdError, InvalidRequest, ModelNotFound, ModelUnavailable
from hfd.daemon.settings import ModelSpec, Settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]


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

    def info(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "engine": self.engine,
            "device": self.device,
            "path": str(self.path),
            "memory_bytes": self.model.memory_bytes(),
            "in_use": self.in_use,
            "load_seconds": round(self.load_seconds, 3),
            "keep_alive": self.keep_alive,
            "expires_in": None if self.expires_at is None else max(0.0, self.expires_at - now),
            "scheduler": self.scheduler.stats(),
        }


def detect_task(path: Path) -> Task:
    """generate for causal LMs, embed for encoders, from config.json's architectures."""
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise ModelUnavailable(f"{path} has no config.json; is it a model directory?") from None
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot read {path / 'config.json'}: {exc}") from exc
    archs = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "generate"
    return "embed"


@dataclass
class _Slot:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    loaded: LoadedModel | None = None


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Callable[[ModelSpec], Path] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self._resolve = resolve or _resolve_local
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._specs: dict[str, ModelSpec] = {s.public_name: s for s in settings.models}
        self._wake = anyio.Event()

    # ----------------------------------------------------------------- catalogue

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def spec(self, name: str) -> ModelSpec:
        spec = self._specs.get(name)
        if spec is None:
            for s in self._specs.values():
                if s.ref == name:
                    return s
            raise ModelNotFound(
                f"model {name!r} is not served here; known models: {', '.join(sorted(self._specs)) or 'none'}",
                param="model",
            )
        return spec

    def loaded(self) -> list[LoadedModel]:
        return [s.loaded for s in self._slots.values() if s.loaded is not None]

    # ----------------------------------------------------------------- use

    @asynccontextmanager
    async def acquire(self, name: str, keep_alive: float | None = None) -> AsyncIterator[LoadedModel]:
        lm = await self.load(name)
        lm.in_use += 1
        lm.expires_at = None
        try:
            yield lm
        finally:
            lm.in_use -= 1
            lm.last_used = self._clock()
            if keep_alive is not None:
                lm.keep_alive = keep_alive
            if lm.in_use == 0:
                self._arm(lm)

    async def load(self, name: str) -> LoadedModel:
        spec = self.spec(name)
        slot = self._slots.setdefault(spec.public_name, _Slot())
        if slot.loaded is not None:
            return slot.loaded
        async with slot.lock:
            if slot.loaded is None:
                slot.loaded = await self._load(spec)
                self._arm(slot.loaded)
        return slot.loaded

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

    # ----------------------------------------------------------------- loading

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        started = time.perf_counter()
        path = await anyio.to_thread.run_sync(self._resolve, spec)
        task: Task
        if spec.task is not None:
            if spec.task not in ("generate", "embed"):
                raise InvalidRequest(f"model {spec.public_name!r}: task must be generate or embed")
            task = spec.task  # type: ignore[assignment]
        else:
            task = detect_task(path)
        errors: list[str] = []
        for engine, device, reason in self._candidates(task, spec):
            try:
                backend = get_backend(engine)
                opts = self._options(spec, path, task, device)
                model: EncoderModel | GenerationModel
                if task == "generate":
                    model = await anyio.to_thread.run_sync(backend.load_generator, opts)
                else:
                    model = await anyio.to_thread.run_sync(backend.load_encoder, opts)
            except HfdError as exc:
                if exc.status < 500:
                    raise
                errors.append(f"{engine}/{device}: {exc.message}")
                log.warning("engine failed to load model, trying the next", extra={"model": spec.public_name, "engine": engine, "error": exc.message})
                continue
            except Exception as exc:  # an engine's own failure: fall back to the next engine
                errors.append(f"{engine}/{device}: {type(exc).__name__}: {exc}")
                log.warning("engine failed to load model, trying the next", extra={"model": spec.public_name, "engine": engine, "error": str(exc)})
                continue
            scheduler = self._scheduler(spec, task, model)
            scheduler.start()
            seconds = time.perf_counter() - started
            now = self._clock()
            keep = spec.keep_alive if spec.keep_alive is not None else self.settings.default_keep_alive
            log.info("model loaded", extra={"model": spec.public_name, "engine": engine, "device": device, "seconds": round(seconds, 3), "why": reason})
            return LoadedModel(
                spec=spec, name=spec.public_name, task=task, engine=engine, device=device, path=path,
                model=model, scheduler=scheduler, loaded_at=now, load_seconds=seconds,
                keep_alive=keep, last_used=now,
            )
        raise ModelUnavailable(f"model {spec.public_name!r} could not be loaded: " + "; ".join(errors))

    def _candidates(self, task: Task, spec: ModelSpec) -> list[tuple[str, str, str]]:
        engine = spec.engine or self.settings.engine
        device = spec.device or self.settings.device
        try:
            from hfd.backends import hardware, policy
        except ImportError:
            return [(engine or "torch", device or "cpu", "default")]
        choices = policy.choose_engine(task, hardware.detect(), pinned_engine=engine, pinned_device=device)
        return [(c.engine, c.device, c.reason) for c in choices]

    def _options(self, spec: ModelSpec, path: Path, task: Task, device: str) -> LoadOptions:
        from hfd.daemon.threads import engine_threads

        return LoadOptions(
            path=path,
            task=task,
            device=device,
            threads=engine_threads(self.settings, spec),
            weight_format=spec.weight_format,
            trust_remote_code=spec.trust_remote_code,
            max_running=spec.max_running or self.settings.max_running,
            max_batched_tokens=self.settings.max_batched_tokens,
            cache_dir=self.settings.cache_dir,
            extra={"allow_pickle": spec.allow_pickle, **dict(spec.options)},
        )

    def _scheduler(self, spec: ModelSpec, task: Task, model: EncoderModel | GenerationModel) -> Any:
        s = self.settings
        if task == "generate":
            from hfd.daemon.scheduler.generation import GenerationScheduler

            assert isinstance(model, GenerationModel)
            return GenerationScheduler(model, name=spec.public_name, max_queue=s.max_queue, max_running=spec.max_running or s.max_running)
        from hfd.daemon.scheduler.encoder import EncoderScheduler

        assert isinstance(model, EncoderModel)
        return EncoderScheduler(
            model, name=spec.public_name, max_queue=s.max_queue, max_batch=s.encoder_max_batch,
            batch_tokens=s.encoder_batch_tokens, wait_ms=s.encoder_batch_wait_ms,
        )

    async def _close(self, lm: LoadedModel, grace: float) -> None:
        await lm.scheduler.aclose(grace=grace)
        await anyio.to_thread.run_sync(lm.model.close)
        log.info("model unloaded", extra={"model": lm.name})


def _resolve_local(spec: ModelSpec) -> Path:
    """A local directory, or a repo id already in the local Hugging Face cache."""
    candidate = Path(spec.ref).expanduser()
    if candidate.is_dir():
        return candidate
    if spec.ref.count("/") == 1 and not spec.ref.startswith(("/", ".", "~")):
        repo, _, revision = spec.ref.partition("@")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo, revision=revision or None, local_files_only=True))
        except Exception as exc:
            raise ModelNotFound(f"{spec.ref!r} is not in the local Hugging Face cache: {exc}") from exc
    raise ModelNotFound(f"model {spec.public_name!r}: {spec.ref!r} is neither a directory nor org/name")
