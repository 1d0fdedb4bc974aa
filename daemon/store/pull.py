"""Pull progress, and the async entry point the HTTP and IPC transports call.

``await pull(store, "org/name", progress)`` runs the pull on a worker thread and calls
``progress(PullProgress)`` on the event loop's thread (a few times a second, and at every
status change), so a transport can forward each event as an SSE line or an IPC ``event``
message. Cancelling the awaiting task stops the pull at its next chunk, unless another caller
is waiting for the same pull (then it carries on for them). What was downloaded so far stays
as ``.incomplete`` files and the next pull resumes from it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Final, TextIO

import anyio
import anyio.from_thread
import anyio.to_thread

from hfd._units import format_bytes
from hfd.client import types as client_types
from hfd.daemon.metrics import record_fetch

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore
    from hfd.daemon.store.snapshot import Snapshot

log = logging.getLogger(__name__)

# Statuses, in the order a pull goes through them.
RESOLVING: Final = "resolving"  # looking in the store, finding a source, listing files
WAITING: Final = "waiting"  # another process is pulling the same model
DOWNLOADING: Final = "downloading"
PLACING: Final = "placing"  # linking the verified files into a snapshot
DONE: Final = "done"

_SPEED_WINDOW: Final = 5.0


class PullProgress(client_types.PullProgress):
    """One progress event, as the client reads it (``hfd.client.types.PullProgress``, whose
    fields it has), and as the doors send it."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[PullProgress], None]


class ProgressMeter:
    """Counts one pull's bytes and reports at most every ``interval`` seconds (and at every status change)."""

    def __init__(self, ref: str, emit: ProgressCallback | None, *, interval: float = 0.2) -> None:
        self._emit = emit
        self._interval = interval
        self._state = PullProgress(ref=ref, status=RESOLVING)
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit = 0.0
        self._lock = threading.Lock()

    @property
    def state(self) -> PullProgress:
        return self._state

    def status(self, status: str, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, status=status, **changes)
        self._report(force=True)

    def plan(self, source: str, files_total: int, total: int) -> None:
        with self._lock:
            self._samples.clear()
            self._state = replace(
                self._state,
                status=DOWNLOADING,
                source=source,
                files_total=files_total,
                total=total,
                completed=0,
                files_done=0,
            )
        self._report(force=True)

    def begin_file(self, path: str) -> None:
        with self._lock:
            self._state = replace(self._state, file=path)
        self._report(force=False)

    def add(self, nbytes: int) -> None:
        with self._lock:
            self._state = replace(self._state, completed=self._state.completed + nbytes)
            source = self._state.source
        record_fetch(source or "unknown", nbytes)  # hfd_fetch_bytes_total{source}
        self._report(force=False)

    def end_file(self) -> None:
        with self._lock:
            self._state = replace(self._state, files_done=self._state.files_done + 1)
        self._report(force=False)

    def _report(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < self._interval:
            return
        with self._lock:
            self._samples.append((now, self._state.completed))
            while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW:
                self._samples.popleft()
            t0, c0 = self._samples[0]
            speed = (self._state.completed - c0) / (now - t0) if now > t0 else 0.0
            remaining = max(self._state.total - self._state.completed, 0)
            eta = remaining / speed if speed > 0 else None
            self._state = replace(self._state, speed=max(speed, 0.0), eta=eta)
            state = self._state
            self._last_emit = now
        if self._emit is not None:
            self._emit(state)


# ----------------------------------------------------------------------------- the async API


async def pull(
    store: ModelStore,
    ref: str,
    progress: ProgressCallback | None = None,
    *,
    allow_pickle: bool | None = None,
) -> Snapshot:
    """Pull ``ref`` into the store (or find it there) without blocking the event loop."""
    cancelled = threading.Event()

    def emit(p: PullProgress) -> None:
        if progress is None or cancelled.is_set():
            return
        try:
            anyio.from_thread.run_sync(progress, p)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            cancelled.set()

    def work() -> Snapshot:
        return store.pull(ref, progress=emit, should_stop=cancelled.is_set, allow_pickle=allow_pickle)

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    finally:
        # On success this is a no-op; on cancellation it stops the worker at its next chunk.
        cancelled.set()


# ----------------------------------------------------------------------------- rendering


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def format_line(p: PullProgress, width: int = 24) -> str:
    if p.status != DOWNLOADING or not p.total:
        where = f" from {p.source}" if p.source else ""
        return f"{p.ref}: {p.status}{where}"
    frac = min(p.completed / p.total, 1.0)
    filled = int(frac * width)
    bar = "█" * filled + "░" * (width - filled)
    return (
        f"{p.ref} [{p.source}] {bar} {frac * 100:5.1f}%  {format_bytes(p.completed)}/{format_bytes(p.total)}  "
        f"{format_bytes(p.speed)}/s  ETA {_eta(p.eta)}  ({p.files_done}/{p.files_total} files)"
    )


class TerminalProgress:
    """A one-line progress bar, redrawn in place (for a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._width = 0

    def __call__(self, p: PullProgress) -> None:
        line = format_line(p)
        pad = " " * max(self._width - len(line), 0)
        self._width = len(line)
        end = "\n" if p.status == DONE else ""
        self.stream.write(f"\r{line}{pad}{end}")
        self.stream.flush()


class LogProgress:
    """Structured log lines (not on a terminal): status changes, and bytes every ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self._last = 0.0
        self._status = ""

    def __call__(self, p: PullProgress) -> None:
        now = time.monotonic()
        if p.status == self._status and now - self._last < self.every:
            return
        self._status, self._last = p.status, now
        log.info("pull progress", extra={k: v for k, v in p.to_dict().items() if v is not None})
