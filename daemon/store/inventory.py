"""What the store holds: listing snapshots with their sizes, refs, task and files, and removing them.

Functions of the :class:`~hfd.daemon.store.model_store.ModelStore` they read (its layouts and
catalog), kept apart from pulling: listing and removing never fetch.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from hfd._digests import is_sha256, sha256_file
from hfd.client.errors import InvalidRequest, ModelNotFound
from hfd.daemon.store.catalog import SnapshotRow
from hfd.daemon.store.fetch import Attempt, failure
from hfd.daemon.store.files import model_files
from hfd.daemon.store.layout import RepoDir
from hfd.daemon.store.lookup import find_here, stored_commit
from hfd.daemon.store.snapshot import Snapshot, SnapshotInfo
from hfd.daemon.store.task import guess_task
from hfd.daemon.store.writer import PlacedFile

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removed:
    repo: str
    commits: tuple[str, ...]
    freed: int  # bytes of blobs deleted


def info(store: ModelStore, snap: Snapshot, repo_dir: RepoDir | None, *, with_files: bool) -> SnapshotInfo:
    row: SnapshotRow | None = None
    files: tuple[PlacedFile, ...] = ()
    if repo_dir is not None and snap.commit is not None:
        row = store._catalog_call(lambda: store.catalog.snapshot(snap.repo, snap.commit or ""), None)
        refs = tuple(sorted(r for r, c in repo_dir.refs_map().items() if c == snap.commit))
        links = repo_dir.snapshot_files(snap.commit)
        sizes = {p: _size(snap.path / p) for p in links}
        # A dangling link: its blob was quarantined (hfd verify) or deleted.
        missing = tuple(sorted(p for p, b in links.items() if b and not repo_dir.blob(b).exists()))
        if with_files:
            known = {
                f.path: f
                for f in store._catalog_call(lambda: store.catalog.files(snap.repo, snap.commit or ""), [])
            }
            files = tuple(
                known.get(p)
                or PlacedFile(
                    p,
                    sizes[p],
                    b if is_sha256(b) or p in missing else sha256_file(snap.path / p),
                    b or "",
                )
                for p, b in sorted(links.items())
            )
    else:
        refs = ()
        missing = ()
        sizes = {str(p.relative_to(snap.path)): p.stat().st_size for p in model_files(snap.path)}
        if with_files:
            files = tuple(PlacedFile(p, s, sha256_file(snap.path / p), "") for p, s in sorted(sizes.items()))
    return SnapshotInfo(
        snapshot=snap,
        refs=refs,
        size=sum(sizes.values()),
        file_count=len(sizes),
        task=(row.task if row and row.task else guess_task(snap.path)),
        cid=row.cid if row else None,
        pulled_at=row.pulled_at if row else None,
        last_used=row.last_used if row else None,
        files=files,
        missing=missing,
    )


def list_snapshots(store: ModelStore) -> list[SnapshotInfo]:
    """Every snapshot in the store, then those of the Hugging Face cache (source ``hf-cache``)."""
    out: list[SnapshotInfo] = []
    rows = {(r.repo, r.commit): r for r in store._catalog_call(store.catalog.snapshots, [])}
    layouts = [(store.layout, "store")] + ([(store.hf_layout, "hf-cache")] if store.hf_layout else [])
    for layout, kind in layouts:
        for repo_dir in layout.repos():
            for commit in repo_dir.commits():
                row = rows.get((repo_dir.repo, commit)) if kind == "store" else None
                source = row.source if row else kind
                revision = row.revision if row else None
                snap = Snapshot(repo_dir.snapshot(commit), repo_dir.repo, revision, commit, source)
                out.append(info(store, snap, repo_dir, with_files=False))
    return out


def show(store: ModelStore, ref: str) -> SnapshotInfo:
    snap = find_here(store, ref)
    return info(store, snap, repo_dir_of(store, snap), with_files=True)


def repo_dir_of(store: ModelStore, snap: Snapshot) -> RepoDir | None:
    if snap.source == "local" or snap.commit is None:
        return None
    layout = store.hf_layout if snap.source == "hf-cache" and store.hf_layout else store.layout
    return layout.repo(snap.repo)


def remove(store: ModelStore, ref: str) -> Removed:
    """Delete a snapshot (``org/name@rev``) or every snapshot of a repo (``org/name``), and the
    blobs no remaining snapshot uses. Only the store is touched, never an HF cache or a local dir."""
    mref = store.parse(ref)
    if mref.kind == "path":
        raise InvalidRequest(f"{ref} is a local directory; hfd does not delete it")
    if mref.kind == "ipfs":
        snap = store.find(mref)
        if snap is None:
            raise ModelNotFound(f"no stored snapshot has CID {mref.cid}")
        repo, commits = snap.repo, [snap.commit or ""]
    else:
        assert mref.repo is not None
        repo = mref.repo
        repo_dir = store.layout.repo(repo)
        if mref.tag is not None:  # org/name:Q4_K_M: the snapshot holding that tag's file
            commit = stored_commit(repo_dir, mref)
            commits = [commit] if commit else []
        elif mref.explicit_revision:
            commit = repo_dir.commit_for(mref.revision)
            commits = [commit] if commit else []
        else:
            commits = repo_dir.commits()
        if not commits:
            raise failure(
                str(mref),
                [Attempt("store", "not there (hfd rm never touches the Hugging Face cache)")],
            )
    with store.repo_lock(repo) as repo_dir:
        for commit in commits:
            target = repo_dir.snapshot(commit)
            if target.is_dir():
                # Rename first: a crash mid-delete leaves a staging dir (cleaned later), not half a snapshot.
                trash = repo_dir.snapshots / f".staging-rm-{commit}-{uuid.uuid4().hex[:8]}"
                os.rename(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
            for revision, c in repo_dir.refs_map().items():
                if c == commit:
                    (repo_dir.refs / revision).unlink(missing_ok=True)
            store._catalog_call(partial(store.catalog.forget, repo, commit), None)
        freed = repo_dir.drop_unused_blobs(incomplete=not repo_dir.commits())
        store._catalog_call(partial(store.catalog.forget_checks, repo, repo_dir.blob_users()), None)
        if not repo_dir.commits():
            shutil.rmtree(repo_dir.root, ignore_errors=True)
    log.info("snapshots removed", extra={"repo": repo, "commits": commits, "freed": freed})
    return Removed(repo, tuple(commits), freed)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
