"""What every per-model scheduler offers the manager, the metrics and ``hfd ps``.

``Scheduler`` is the part both schedulers share (start, stop, how busy, counters); the work
calls differ by task (``GenerationScheduler.submit``, ``EncoderScheduler.embed``) and are
reached through ``LoadedModel.generation()`` / ``LoadedModel.encoder()``.

``SchedulerCore`` holds the fields every scheduler starts with (its model, name, queue bound,
in-flight count and refusal and failure counters); ``ThreadedScheduler`` adds the one worker
thread the generation and encoder schedulers run their engine on.

``stats()`` returns a dataclass so readers name fields the type checker knows; ``to_dict()``
is the wire form (``hfd ps``'s ``scheduler`` object), with the same keys as the fields.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

M = TypeVar("M")


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


class SchedulerCore(Generic[M]):
    """The model, the queue bound and the counters every scheduler keeps."""

    def __init__(self, model: M, *, name: str, max_queue: int) -> None:
        self.model = model
        self.name = name
        self.max_queue = max_queue
        self._active = 0  # requests accepted and not yet answered (event loop only)
        self._rejected = 0  # refused because the queue was full
        self._errors = 0  # engine failures

    @property
    def active(self) -> int:
        return self._active


class ThreadedScheduler(SchedulerCore[M]):
    """A scheduler whose engine runs on one daemon thread, ``hfd-<thread_tag>-<name>``."""

    thread_tag: ClassVar[str]

    def __init__(self, model: M, *, name: str, max_queue: int) -> None:
        super().__init__(model, name=name, max_queue=max_queue)
        self._cond = threading.Condition()
        self._stopping = False  # guarded by _cond
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        name = f"hfd-{self.thread_tag}-{self.name}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError
