"""Where a pull looks, in which order, and how concurrent pulls of one model share the work.

Resolution order: the store (and an existing Hugging Face cache), then IPFS when a CID is
known for the reference, then the Hub when online. Each source that is tried and fails is kept
as an ``Attempt``, so the final error names every place that was looked at and why it did not
give the model.

Two pulls of the same model at once do the work once: within a process they share one
``Flight`` (the second caller waits and sees the first one's progress); across processes the
repository's lock file makes the second wait, after which it finds the model in the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hfd.client.errors import Cancelled, FetchError, Forbidden, HfdError, ModelNotFound, VerificationFailed
from hfd.daemon.store.layout import RepoDir
from hfd.daemon.store.pull import ProgressMeter, PullProgress
from hfd.daemon.store.safety import kept_files
from hfd.daemon.store.writer import PlacedFile
from hfd.ipfs.manifest import Manifest, ManifestFile

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Fetched:
    """What a source placed in the store's blobs: enough to link and record the snapshot."""

    repo: str
    revision: str | None
    commit: str
    files: tuple[PlacedFile, ...]
    source: str
    cid: str | None = None


@dataclass(frozen=True)
class ManifestFetch:
    """A snapshot to fetch by its manifest (from IPFS or a bundle) into ``repo_dir``, whose
    lock the caller holds: the progress meter, whether pickled weights may come, and when to stop."""

    manifest: Manifest
    repo_dir: RepoDir
    meter: ProgressMeter
    allow_pickle: bool
    should_stop: Callable[[], bool]
    tag: str | None = None  # a GGUF quantization tag: that tag's files only (gguf_tags)

    def planned(self, source: str) -> list[ManifestFile]:
        """The manifest's files the store keeps (``kept_files``), planned on the meter for ``source``."""
        entries = kept_files(self.manifest, self.repo_dir, allow_pickle=self.allow_pickle, tag=self.tag)
        self.meter.plan(source, len(entries), sum(f.size for f in entries))
        return entries


@dataclass(frozen=True)
class Attempt:
    """One place that was looked at."""

    place: str  # e.g. "store (/var/lib/hfd/models)", "IPFS (http://127.0.0.1:5001) cid bafy..."
    outcome: str  # why it did not give the model
    error: HfdError | None = None


def failure(ref: str, attempts: list[Attempt]) -> HfdError:
    """The error for a pull that found the model nowhere, naming every place it looked.

    A file that failed verification or a refusal of pickled weights is reported as such; anything
    else (not there, unreachable, offline) is ModelNotFound.
    """
    where = "; ".join(f"{a.place}: {a.outcome}" for a in attempts)
    errors = [a.error for a in attempts if a.error is not None]
    details = {"looked_in": [{"place": a.place, "outcome": a.outcome} for a in attempts]}
    for kind in (VerificationFailed, Forbidden):
        for err in errors:
            if isinstance(err, kind):
                return kind(f"{err.message} (looked in: {where})", details={**err.details, **details})
    # Unreachable or failing sources included: for the caller the model is simply not to be had
    # now, and the message says where it looked and why each place did not give it.
    return ModelNotFound(f"model {ref} was not found: {where}", details=details)


class Flight:
    """One pull in progress, shared by every caller that asked for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.listeners: list[Callable[[PullProgress], None]] = []
        self.stops: list[Callable[[], bool]] = []
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.last: PullProgress | None = None

    def emit(self, progress: PullProgress) -> None:
        self.last = progress
        with self._lock:
            listeners = list(self.listeners)
        for listener in listeners:
            try:
                listener(progress)
            except Exception:  # a listener's bug must not break the pull others wait on
                log.exception("pull progress listener failed")

    def should_stop(self) -> bool:
        """True once every caller waiting for this pull has given up on it."""
        with self._lock:
            stops = list(self.stops)
        return bool(stops) and all(stop() for stop in stops)

    def join(self, progress: Callable[[PullProgress], None] | None, stop: Callable[[], bool]) -> None:
        with self._lock:
            if progress is not None:
                self.listeners.append(progress)
            self.stops.append(stop)

    def leave(self, progress: Callable[[PullProgress], None] | None, stop: Callable[[], bool]) -> None:
        with self._lock:
            if progress is not None and progress in self.listeners:
                self.listeners.remove(progress)
            if stop in self.stops:
                self.stops.remove(stop)


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self.leads = 0  # how many flights this process started (what tests count)

    def run(
        self,
        key: str,
        work: Callable[[Flight], T],
        *,
        progress: Callable[[PullProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> T:
        stop = should_stop or (lambda: False)
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = Flight()
                self.leads += 1
            flight.join(progress, stop)
        if leader:
            try:
                flight.result = work(flight)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
            return flight.result  # type: ignore[return-value]
        if progress is not None and flight.last is not None:
            progress(flight.last)
        while not flight.done.wait(0.1):
            if stop():
                flight.leave(progress, stop)
                raise Cancelled(f"stopped waiting for the pull of {key}")
        if flight.error is not None:
            err = flight.error
            if isinstance(err, HfdError):
                raise type(err)(err.message, details=err.details) from err
            raise FetchError(f"the pull of {key} failed: {err!r}") from err
        return flight.result  # type: ignore[return-value]
