"""Pulling a model into the store on a client's request: what both doors share.

``POST /api/pull`` and the IPC ``models.pull`` operation parse the same body
(:class:`PullRequest`), and both call :func:`pull` with a coroutine that forwards one progress
event (a ``PullProgress.to_dict()``) to their client: an NDJSON line, an IPC ``event``.

The store reports progress from its worker thread, onto the event loop, whenever it likes; a
client may read slower than that. Events therefore wait in a short queue in which a newer event
of the same status replaces the older one, so every status change reaches the client and a slow
one never makes the queue grow. While nothing moves (another process holds the repository's
lock, a slow source), the last event is repeated every :data:`HEARTBEAT` seconds: a client's
timeout then means the daemon is gone, not that the pull is slow.

When forwarding fails (the client went away) the pull is cancelled: the store stops at its next
chunk, unless another caller waits for the same pull, and a later pull resumes the download.

The daemon's one :class:`~hfd.daemon.store.ModelStore` serves every pull (:class:`Pulls`, made
by the composition root in ``hfd.daemon.app``), so concurrent pulls of one model through either
door share the work.

With ``export_on_pull`` (the default) a pull then builds the engine export the model's first
load here would need (``hfd.daemon.models.exporting``), between an ``exporting`` event and the
result, whose ``export`` field says what was built: the first request does not pay for it. A
failed export does not fail the pull (the model is in the store; its load reports the error).
With ``measure_engines`` too, the model's candidate engines are then timed here (a
``measuring`` event; the result's ``engines`` field: ``hfd.daemon.models.engine_choice``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
from pydantic import BaseModel, ConfigDict, Field

from hfd.client.errors import HfdError, InvalidRequest

if TYPE_CHECKING:
    from hfd.daemon.settings import Settings
    from hfd.daemon.store import ModelStore, PullProgress

log = logging.getLogger(__name__)

HEARTBEAT: Final = 5.0  # seconds without progress before the last event is sent again

Emit = Callable[[dict[str, Any]], Awaitable[None]]
# A step after a pull (building the engine export, measuring the engines): (reference, snapshot
# directory) -> what it did.
Exporter = Callable[[str, Path], Awaitable[dict[str, Any] | None]]


class PullRequest(BaseModel):
    """Body of ``POST /api/pull`` and ``models.pull``. ``model`` is a store reference:
    ``org/name[@revision]``, ``ipfs://<cid>`` or the alias of a configured model."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: Annotated[str, Field(min_length=1)]
    stream: bool = True  # progress events before the result (as Ollama's pull API)


class Pulls:
    """Pulls into the daemon's one :class:`~hfd.daemon.store.ModelStore` (the one the model
    manager resolves through, so a pull and a load of one model share its single-flight table).

    Made without a store (a service built for a test), it makes its own on first use.
    """

    def __init__(
        self,
        settings: Settings,
        store: ModelStore | None = None,
        exporter: Exporter | None = None,
        measurer: Exporter | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.exporter = exporter
        self.measurer = measurer  # times the candidate engines after the export

    @property
    def store(self) -> ModelStore:
        if self._store is None:
            from hfd.daemon.store import ModelStore

            self._store = ModelStore(self.settings)
        return self._store

    def check_ref(self, ref: str) -> str:
        """``ref`` stripped, when it is a reference a client may pull; raises otherwise.

        Local directories are refused unless the daemon's own configuration names them (an
        alias): a client must not make the daemon read paths of its choosing.
        """
        mref = self.store.parse(ref)  # InvalidRequest / ValidationFailed for a malformed reference
        if mref.kind == "path" and self.settings.model(ref.strip()) is None:
            raise InvalidRequest(
                f"{ref!r} names a local directory; pull org/name[@revision] or ipfs://<cid> "
                "(local models are served by naming them in the daemon's configuration)",
                param="model",
            )
        return ref.strip()

    async def pull(self, ref: str, emit: Emit | None = None) -> dict[str, Any]:
        """Pull ``ref`` into the store (or find it there); the result is
        ``{"status": "success", "model": ref, "path", "repo", "revision", "commit", "source"}``.

        ``emit`` gets each progress event; an exception from it cancels the pull and is raised.
        Call :meth:`check_ref` first where errors must come before anything is sent.
        """
        ref = self.check_ref(ref)
        store = self.store
        relay = _Relay()
        failures: list[BaseException] = []
        snapshot = None
        # Failures are collected and raised outside the task group, so callers see the error
        # itself rather than an exception group.
        async with anyio.create_task_group() as tg:
            if emit is not None:

                async def forward() -> None:
                    try:
                        await relay.forward(emit)
                    except Exception as exc:
                        failures.append(exc)
                        tg.cancel_scope.cancel()

                tg.start_soon(forward)
            try:
                snapshot = await store.apull(ref, relay.put if emit is not None else None)
            except Exception as exc:
                failures.append(exc)
            finally:
                relay.close()
        if failures:
            raise failures[0]
        assert snapshot is not None
        log.info(
            "model pulled",
            extra={"model": ref, "repo": snapshot.repo, "commit": snapshot.commit, "source": snapshot.source},
        )
        result = {"status": "success", "model": ref, **snapshot.to_dict()}
        if self.exporter is not None and self.settings.export_on_pull:
            # The export event names the reference as the download's events do (the parsed ref).
            progress_ref = str(store.parse(ref))
            path = Path(snapshot.path)
            result["export"] = await self._after("exporting", self.exporter, ref, progress_ref, path, emit)
            if self.measurer is not None and self.settings.measure_engines:
                result["engines"] = await self._after(
                    "measuring", self.measurer, ref, progress_ref, path, emit
                )
        return result

    async def _after(
        self, status: str, step: Exporter, ref: str, progress_ref: str, path: Path, emit: Emit | None
    ) -> dict[str, Any] | None:
        """A step after the download (the export, the engines' measurement): its event, then its
        result. A failure does not fail the pull: the model is in the store, and its load
        reports the error again (a failed measurement leaves the static order)."""
        if emit is not None:
            await emit({"status": status, "model": ref, "ref": progress_ref})
        try:
            return await step(ref, path)
        except Exception as exc:
            message = exc.message if isinstance(exc, HfdError) else f"{type(exc).__name__}: {exc}"
            log.warning(f"{status} after pull failed", extra={"model": ref, "error": message})
            return {"error": message}


class _Relay:
    """Progress events on their way to a client (all methods run on the event loop's thread)."""

    def __init__(self) -> None:
        self.pending: deque[dict[str, Any]] = deque()
        self.closed = False
        self.wake = anyio.Event()

    def put(self, progress: PullProgress) -> None:
        event = progress.to_dict()
        if self.pending and self.pending[-1]["status"] == event["status"]:
            self.pending[-1] = event  # the same phase, further on: only the newest matters
        else:
            self.pending.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def forward(self, emit: Emit) -> None:
        last: dict[str, Any] | None = None
        while True:
            while self.pending:
                last = self.pending.popleft()
                await emit(last)
            if self.closed:
                return
            self.wake = anyio.Event()
            with anyio.move_on_after(HEARTBEAT) as idle:
                await self.wake.wait()
            if idle.cancelled_caught and last is not None:
                await emit(last)
