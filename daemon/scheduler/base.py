"""What every per-model scheduler offers the manager, the metrics and ``hfd ps``.

``Scheduler`` is the part both schedulers share (start, stop, how busy, counters); the work
calls differ by task (``GenerationScheduler.submit``, ``EncoderScheduler.embed``) and are
reached through ``LoadedModel.generation()`` / ``LoadedModel.encoder()``.

``stats()`` returns a dataclass so readers name fields the type checker knows; ``to_dict()``
is the wire form (``hfd ps``'s ``scheduler`` object), with the same keys as the fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, kw_only=True)
class SchedulerStats:
    """Counters both schedulers keep."""

    kind: str
    active: int  # requests accepted and not yet answered
    max_queue: int
    requests_rejected: int  # refused because the queue was full
    errors: int  # engine failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class GenerationStats(SchedulerStats):
    kind: Literal["generation"] = "generation"
    waiting: int
    running: int
    max_running: int
    steps: int
    tokens_generated: int
    requests_finished: int
    mean_batch_size: float
    mean_step_ms: float


@dataclass(frozen=True, kw_only=True)
class EncoderStats(SchedulerStats):
    kind: Literal["encoder"] = "encoder"
    pending_inputs: int
    max_batch: int
    batch_tokens: int
    batches: int
    inputs: int
    mean_batch_size: float
    padding_efficiency: float
    mean_batch_ms: float
    dropped_items: int  # inputs of abandoned requests removed before computing


@runtime_checkable
class Scheduler(Protocol):
    """The lifecycle and counters of a per-model scheduler."""

    name: str
    max_queue: int

    @property
    def active(self) -> int: ...

    def start(self) -> None: ...

    def stats(self) -> SchedulerStats: ...

    async def aclose(self, grace: float = 0.0) -> None: ...
