"""The model store: find a model locally, or pull it from IPFS or the Hub into the store.

``ModelStore(settings).resolve(ref, allow_pull=...)`` is what the model manager calls (from a
worker thread). It returns a ``Snapshot`` whose ``path`` a backend loads from; a local
directory resolves to itself, a stored model to ``<state_dir>/models/models--org--name/
snapshots/<commit>``, a model in an existing Hugging Face cache to its snapshot there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

from hfd.client.errors import (
    FetchError,
    HfdError,
    ModelNotFound,
)
from hfd.daemon.settings import ModelSpec, Settings
from hfd.daemon.store import inventory, lookup, sharing
from hfd.daemon.store.catalog import Catalog
from hfd.daemon.store.cid_index import candidate_cids
from hfd.daemon.store.fetch import Attempt, Fetched, Flight, ManifestFetch, SingleFlight, failure
from hfd.daemon.store.hub import HubFetcher, hub_endpoint, hub_offline
from hfd.daemon.store.inventory import Removed
from hfd.daemon.store.ipfs_source import IpfsFetcher
from hfd.daemon.store.layout import CacheLayout, RepoDir, default_hf_cache
from hfd.daemon.store.locks import FileLock, lock_path
from hfd.daemon.store.pull import DONE, PLACING, RESOLVING, WAITING, ProgressCallback, ProgressMeter
from hfd.daemon.store.refs import ModelRef, parse_ref
from hfd.daemon.store.sharing import PublishResult
from hfd.daemon.store.snapshot import Snapshot, SnapshotInfo
from hfd.daemon.store.space import dropping_partial_on_full_disk
from hfd.daemon.store.task import guess_task
from hfd.daemon.store.verify import VerifyReport, check_loadable, stat_key, verify
from hfd.daemon.store.writer import PlacedFile
from hfd.ipfs.errors import UNREACHABLE
from hfd.ipfs.manifest import Manifest

log = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D")

TOUCH_EVERY: Final = 60.0  # seconds: last-used times are for eviction, not auditing


class ModelStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_dir / "models"
        self.layout = CacheLayout(self.root)
        self.catalog = Catalog(settings.state_dir / "catalog.duckdb")
        self.locks_dir = settings.state_dir / "locks"
        hf = (settings.hf_cache_dir or default_hf_cache()) if settings.store_use_hf_cache else None
        self.hf_layout = CacheLayout(hf) if hf is not None and hf.resolve() != self.root.resolve() else None
        self.hub = HubFetcher(hub_endpoint(settings.hub_endpoint), timeout=settings.hub_timeout)
        self.ipfs = IpfsFetcher(settings)
        self._flights: SingleFlight[Snapshot] = SingleFlight()
        self._touched: dict[tuple[str, str], float] = {}
        self._touch_lock = threading.Lock()

    # ------------------------------------------------------------------ lookup

    def parse(self, ref: str | ModelSpec) -> ModelRef:
        return parse_ref(ref, self.settings)

    def find(self, ref: ModelRef | ModelSpec | str) -> Snapshot | None:
        """The snapshot if it is here already (store, HF cache or local directory); never fetches."""
        return lookup.find(self, ref)

    def resolve(
        self,
        ref: str | ModelSpec,
        *,
        allow_pull: bool,
        allow_pickle: bool | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Snapshot:
        """The snapshot for ``ref``; pulls it when it is not here and ``allow_pull`` is true.

        Raises ModelNotFound naming every place it looked when the model is nowhere.
        """
        mref = self.parse(ref)
        found = self.find(mref)
        if found is not None and (not allow_pull or self.complete(found)):
            return found  # an incomplete one is refused at load (check_loadable) unless pulled again
        if mref.kind == "path":
            # Named as the client wrote it: an alias must not reveal the directory it stands for.
            log.info("model directory does not exist", extra={"ref": mref.text, "path": str(mref.path)})
            raise ModelNotFound(
                f"model directory {mref.text!r} does not exist", details={"looked_in": [mref.text]}
            )
        if not allow_pull:
            attempts = [
                *lookup.local_attempts(self, mref),
                Attempt(
                    "IPFS and the Hub",
                    f"not tried: pulling is off (allow_pull = false); `hfd pull {mref.text}` fetches it",
                ),
            ]
            raise failure(str(mref), attempts)
        return self._pull(mref, allow_pickle=allow_pickle, progress=progress, should_stop=should_stop)

    def pull(
        self,
        ref: str | ModelSpec,
        *,
        allow_pickle: bool | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Snapshot:
        """``hfd pull``: the store first, then IPFS when a CID is known, then the Hub."""
        return self.resolve(
            ref, allow_pull=True, allow_pickle=allow_pickle, progress=progress, should_stop=should_stop
        )

    async def apull(
        self, ref: str, progress: ProgressCallback | None = None, *, allow_pickle: bool | None = None
    ) -> Snapshot:
        from hfd.daemon.store.pull import pull

        return await pull(self, ref, progress, allow_pickle=allow_pickle)

    def touch(self, snapshot: Snapshot) -> None:
        """Record that a model was used now (at most once a minute per snapshot)."""
        if snapshot.commit is None or snapshot.source in ("local", "hf-cache"):
            return
        key = (snapshot.repo, snapshot.commit)
        now = time.monotonic()
        with self._touch_lock:
            if now - self._touched.get(key, -TOUCH_EVERY) < TOUCH_EVERY:
                return
            self._touched[key] = now
        self._catalog_call(lambda: self.catalog.touch(snapshot.repo, snapshot.commit or ""), None)

    # ------------------------------------------------------------------ pulling

    def _pull(
        self,
        mref: ModelRef,
        *,
        allow_pickle: bool | None,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> Snapshot:
        pickle_ok = mref.allow_pickle if allow_pickle is None else allow_pickle

        def work(flight: Flight) -> Snapshot:
            meter = ProgressMeter(str(mref), flight.emit)
            meter.status(RESOLVING)
            if mref.kind == "ipfs":
                snap = self._pull_cid(mref, meter, pickle_ok, flight.should_stop)
            else:
                snap = self._pull_repo(mref, meter, pickle_ok, flight.should_stop)
            meter.status(DONE, source=snap.source)
            return snap

        return self._flights.run(mref.key, work, progress=progress, should_stop=should_stop)

    @contextmanager
    def repo_lock(
        self, repo: str, meter: ProgressMeter | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[RepoDir]:
        """Exclusive write access to one repository folder, across threads and processes."""
        on_wait = (lambda: meter.status(WAITING)) if meter is not None else None
        with FileLock(
            lock_path(self.locks_dir, f"repo:{repo}"),
            timeout=self.settings.store_lock_timeout,
            should_stop=should_stop,
            on_wait=on_wait,
        ):
            repo_dir = self.layout.repo(repo)
            repo_dir.clean_staging()
            yield repo_dir

    def _pull_repo(
        self, mref: ModelRef, meter: ProgressMeter, allow_pickle: bool, should_stop: Callable[[], bool]
    ) -> Snapshot:
        assert mref.repo is not None
        attempts = lookup.local_attempts(self, mref)
        with (
            self.repo_lock(mref.repo, meter, should_stop) as repo_dir,
            dropping_partial_on_full_disk(repo_dir),
        ):
            found = self.find(mref)  # another pull may have finished while this one waited
            if found is not None:
                if self.complete(found):
                    return found
                # Quarantined (or deleted) blobs: fetch them again; the intact ones are reused.
                attempts[0] = Attempt("store", "incomplete: files are missing (quarantined by hfd verify?)")
            for cid, attempt in candidate_cids(
                self.settings,
                mref,
                attempts,
                lambda: self._catalog_call(
                    lambda: self.catalog.published_cids(mref.repo or "", mref.revision), []
                ),
            ):
                try:
                    manifest = self.ipfs.read_manifest(cid)
                    if manifest.repo != mref.repo or (
                        len(mref.revision) == 40 and manifest.commit != mref.revision
                    ):
                        raise FetchError(
                            f"ipfs://{cid} holds {manifest.repo}@{manifest.commit[:12]}, not {mref}"
                        )
                    fetched = self.ipfs.fetch(
                        cid, ManifestFetch(manifest, repo_dir, meter, allow_pickle, should_stop, mref.tag)
                    )
                    return self.place(
                        Fetched(
                            fetched.repo, mref.stored_revision, fetched.commit, fetched.files, "ipfs", cid
                        ),
                        meter,
                        allow_pickle,
                    )
                except HfdError as exc:
                    if not isinstance(exc, FetchError) and not isinstance(exc, ModelNotFound):
                        raise
                    attempts.append(Attempt(attempt, exc.message, exc))
                    unreachable = exc.details.get("reason") == UNREACHABLE
                    log.warning(
                        "IPFS fetch failed, trying the next source",
                        extra={
                            "ref": str(mref),
                            "cid": cid,
                            "error": exc.message,
                            "unreachable": unreachable,
                        },
                    )
                    if unreachable:
                        break
            hub_place = f"Hub ({self.hub.endpoint})"
            if hub_offline(self.settings.hub_offline):
                attempts.append(Attempt(hub_place, "not tried: offline (hub_offline / HF_HUB_OFFLINE)"))
            else:
                try:
                    fetched = self.hub.fetch(
                        repo_dir, mref.revision, meter, allow_pickle=allow_pickle, should_stop=should_stop,
                        tag=mref.tag,
                    )  # fmt: skip
                except (FetchError, ModelNotFound) as exc:
                    attempts.append(Attempt(hub_place, exc.message, exc))
                else:
                    snap = self.place(fetched, meter, allow_pickle)
                    # A tagged pull's snapshot is a part of the commit: never published as it.
                    if self.settings.ipfs_share and self.settings.ipfs_enabled and mref.tag is None:
                        self._share(snap, meter)
                    return snap
        raise failure(str(mref), attempts)

    def _pull_cid(
        self, mref: ModelRef, meter: ProgressMeter, allow_pickle: bool, should_stop: Callable[[], bool]
    ) -> Snapshot:
        assert mref.cid is not None
        place = f"IPFS ({self.settings.ipfs_api}) ipfs://{mref.cid}"
        if not self.settings.ipfs_enabled:
            raise failure(str(mref), [Attempt(place, "not tried: ipfs_enabled = false")])
        try:
            manifest = self.ipfs.read_manifest(mref.cid)
        except FetchError as exc:
            raise failure(
                str(mref), [Attempt("store", "no snapshot with this CID"), Attempt(place, exc.message, exc)]
            ) from exc
        with (
            self.repo_lock(manifest.repo, meter, should_stop) as repo_dir,
            dropping_partial_on_full_disk(repo_dir),
        ):
            fetched = self.ipfs.fetch(
                mref.cid, ManifestFetch(manifest, repo_dir, meter, allow_pickle, should_stop)
            )
            return self.place(fetched, meter, allow_pickle)

    def complete(self, snap: Snapshot) -> bool:
        """Every file of a stored snapshot is there (a quarantined blob leaves a dangling link)."""
        if snap.source in ("local", "hf-cache") or snap.commit is None:
            return True
        repo_dir = self.layout.repo(snap.repo)
        return all(not b or repo_dir.blob(b).exists() for b in repo_dir.snapshot_files(snap.commit).values())

    def verify(self, ref: str | None = None) -> VerifyReport:
        """``hfd verify``: re-hash every stored blob (or one model's), quarantining the bad ones."""
        return verify(self, ref)

    def check_loadable(self, snap: Snapshot, *, ref: str | None = None) -> None:
        """Raise ModelUnavailable when a stored snapshot is damaged (see ``daemon/store/verify.py``)."""
        check_loadable(self, snap, ref=ref)

    def place(self, fetched: Fetched, meter: ProgressMeter | None, allow_pickle: bool = False) -> Snapshot:
        """Link verified blobs into a snapshot, then its ref, then the catalog rows (call with the repo lock)."""
        if meter is not None:
            meter.status(PLACING)
        repo_dir = self.layout.repo(fetched.repo)
        grown = repo_dir.snapshot(fetched.commit).is_dir()  # a GGUF tag's files join a snapshot
        path = repo_dir.link_snapshot(fetched.commit, {f.path: f.blob for f in fetched.files})
        files = self._with_recorded(fetched, repo_dir) if grown else fetched.files
        hashed = {f.blob for f in fetched.files if f.hashed}
        stats = [(b, key) for b in sorted(hashed) if (key := stat_key(repo_dir.blob(b))) is not None]
        if fetched.revision and fetched.revision != fetched.commit:
            repo_dir.write_ref(fetched.revision, fetched.commit)
        self._catalog_call(
            lambda: self.catalog.record_snapshot(
                repo=fetched.repo,
                commit=fetched.commit,
                revision=fetched.revision,
                source=fetched.source,
                files=files,
                cid=fetched.cid,
                task=guess_task(path),
                allow_pickle=allow_pickle,
            ),
            None,
        )
        # Hashed as they were written: the load check needs no full hash until a file changes.
        self._catalog_call(lambda: self.catalog.record_verified(fetched.repo, stats), None)
        log.info(
            "snapshot stored",
            extra={
                "repo": fetched.repo,
                "commit": fetched.commit,
                "source": fetched.source,
                "files": len(fetched.files),
            },
        )
        return Snapshot(
            path, fetched.repo, fetched.revision or fetched.commit, fetched.commit, fetched.source
        )

    def _with_recorded(self, fetched: Fetched, repo_dir: RepoDir) -> tuple[PlacedFile, ...]:
        """The fetched files and those recorded before for the same snapshot, still linked."""
        linked = repo_dir.snapshot_files(fetched.commit)
        recorded = self._catalog_call(lambda: self.catalog.files(fetched.repo, fetched.commit), [])
        files = {f.path: f for f in recorded if f.path in linked}
        files.update((f.path, f) for f in fetched.files)
        return tuple(files[p] for p in sorted(files))

    def _share(self, snap: Snapshot, meter: ProgressMeter) -> None:
        meter.status("sharing", source="ipfs")
        try:
            self.publish(snap)
        except HfdError as exc:
            log.warning("could not share the model on IPFS", extra={"repo": snap.repo, "error": exc.message})

    def _catalog_call(self, fn: Callable[[], T], default: D) -> T | D:
        # The files on disk are the truth; a catalog that cannot be opened only costs metadata.
        try:
            return fn()
        except HfdError as exc:
            log.warning("catalog unavailable", extra={"path": str(self.catalog.path), "error": exc.message})
            return default

    # ------------------------------------------------------------------ listing, removing (inventory.py)

    def list_snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot in the store, then those of the Hugging Face cache (source ``hf-cache``)."""
        return inventory.list_snapshots(self)

    def show(self, ref: str) -> SnapshotInfo:
        return inventory.show(self, ref)

    def remove(self, ref: str) -> Removed:
        """Delete a snapshot (``org/name@rev``) or every snapshot of a repo (``org/name``), and the
        blobs no remaining snapshot uses. Only the store is touched, never an HF cache or a local dir."""
        return inventory.remove(self, ref)

    # ------------------------------------------------------------------ publishing, bundles (sharing.py)

    def snapshot_manifest(
        self, snap: Snapshot, *, repo: str | None = None
    ) -> tuple[Manifest, list[tuple[str, Path]]]:
        return sharing.snapshot_manifest(self, snap, repo=repo)

    def publish(self, ref: str | Snapshot, *, repo: str | None = None) -> PublishResult:
        return sharing.publish(self, ref, repo=repo)

    def export(self, ref: str, out: Path, *, repo: str | None = None) -> tuple[Manifest, int]:
        return sharing.export(self, ref, out, repo=repo)

    def import_bundle(
        self,
        path: Path,
        *,
        allow_pickle: bool = False,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Snapshot:
        return sharing.import_bundle(
            self, path, allow_pickle=allow_pickle, progress=progress, should_stop=should_stop
        )
