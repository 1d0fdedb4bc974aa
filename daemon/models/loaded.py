"""``LoadedModel``: one loaded model, its engine, scheduler, reservation and timers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfd.backends.base import EncoderModel, GenerationModel, Task
from hfd.client.errors import InvalidRequest
from hfd.daemon.models import engine_info
from hfd.daemon.models.breaker import CircuitBreaker
from hfd.daemon.models.memory import MemoryEstimate
from hfd.daemon.scheduler.base import Scheduler
from hfd.daemon.scheduler.encoder import EncoderScheduler
from hfd.daemon.scheduler.generation import GenerationScheduler
from hfd.daemon.settings import ModelSpec


@dataclass
class LoadedModel:
    spec: ModelSpec
    name: str
    task: Task
    engine: str
    device: str
    path: Path
    model: EncoderModel | GenerationModel
    scheduler: Scheduler
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
    # Why this engine was tried where it was: the measured order or the static one (policy).
    engine_reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # precision, weight_format, threads
    record_key: str = ""  # its engine-failure record key (hfd.daemon.models.engine_memory)

    def generation(self) -> GenerationScheduler:
        """The scheduler of a generation model; ``InvalidRequest`` for an embedding model."""
        if not isinstance(self.scheduler, GenerationScheduler):
            raise InvalidRequest(
                f"model {self.name!r} is an embedding model; use /v1/embeddings", param="model"
            )
        return self.scheduler

    def encoder(self) -> EncoderScheduler:
        """The scheduler of an embedding model; ``InvalidRequest`` for a generation model."""
        if not isinstance(self.scheduler, EncoderScheduler):
            raise InvalidRequest(
                f"model {self.name!r} is a {self.task} model, not an embedding model", param="model"
            )
        return self.scheduler

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
            "scheduler": self.scheduler.stats().to_dict(),
            "preferred_engine": self.preferred_engine or self.engine,
            "fallback_reason": self.fallback_reason,
            "engine_reason": self.engine_reason or None,
            **self.details,
            "kv_cache": engine_info.kv_cache(self.model),
        }

    def _measured(self) -> int:
        try:
            return int(self.model.memory_bytes())
        except Exception:  # an engine that cannot tell must not break `hfd ps`
            return 0
