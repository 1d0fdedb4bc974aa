"""Sharing stored models: publishing a snapshot to IPFS, and bundles (export to a tar file,
import from one).

These are the ways a model leaves or enters the store other than a pull; each works on a
``ModelStore`` (its catalog, locks and placement) and is reached through the store's
``publish``, ``export`` and ``import_bundle``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hfd._digests import sha256_file
from hfd.client.errors import ValidationFailed
from hfd.daemon.store import inventory
from hfd.daemon.store.bundle import import_bundle as _read_bundle
from hfd.daemon.store.bundle import read_bundle_manifest, write_bundle
from hfd.daemon.store.catalog import PublishedRow, utcnow
from hfd.daemon.store.cid_index import update_index
from hfd.daemon.store.fetch import ManifestFetch
from hfd.daemon.store.files import model_files
from hfd.daemon.store.lookup import find_here
from hfd.daemon.store.pull import DONE, ProgressCallback, ProgressMeter
from hfd.daemon.store.snapshot import Snapshot
from hfd.ipfs.manifest import MANIFEST_NAME, Manifest, ManifestFile, content_commit
from hfd.ipfs.publish import IMPORT_OPTIONS

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    cid: str
    repo: str
    revision: str | None
    commit: str
    files: int
    size: int


def snapshot_manifest(
    store: ModelStore, snap: Snapshot, *, repo: str | None = None
) -> tuple[Manifest, list[tuple[str, Path]]]:
    """The manifest of a snapshot, and ``(path, file)`` for each of its files."""
    repo_dir = inventory.repo_dir_of(store, snap)
    if repo_dir is not None and snap.commit is not None:
        info = inventory.info(store, snap, repo_dir, with_files=True)
        entries = [
            ManifestFile(f.path, f.size, f.sha256, f.blob or f.sha256)
            for f in info.files
            if f.path != MANIFEST_NAME
        ]
        manifest = Manifest(snap.repo, snap.revision, snap.commit, tuple(entries), IMPORT_OPTIONS.to_dict())
    else:
        entries = []
        for file in model_files(snap.path):
            rel = file.relative_to(snap.path).as_posix()
            if rel != MANIFEST_NAME:
                digest = sha256_file(file)
                entries.append(ManifestFile(rel, file.stat().st_size, digest, digest))
        name = repo or _local_repo_name(snap.path)
        manifest = Manifest(name, "main", content_commit(entries), tuple(entries), IMPORT_OPTIONS.to_dict())
    return manifest, [(f.path, snap.path / f.path) for f in manifest.files]


def publish(store: ModelStore, ref: str | Snapshot, *, repo: str | None = None) -> PublishResult:
    """Add a stored (or local) snapshot and its manifest to the IPFS node, pinned; return the CID."""
    snap = ref if isinstance(ref, Snapshot) else find_here(store, str(ref))
    manifest, files = snapshot_manifest(store, snap, repo=repo)
    published = store.ipfs.publish(manifest, files)
    store._catalog_call(
        lambda: store.catalog.record_published(
            PublishedRow(
                published.cid,
                manifest.repo,
                manifest.revision,
                manifest.commit,
                published.options.cid_version,
                published.options.raw_leaves,
                published.options.chunker,
                published.options.hash,
                utcnow(),
            )
        ),
        None,
    )
    if snap.source not in ("local", "hf-cache"):
        store._catalog_call(
            lambda: store.catalog.set_cids(
                manifest.repo, manifest.commit, published.cid, published.file_cids
            ),
            None,
        )
    if store.settings.ipfs_index is not None:
        keys = {f"{manifest.repo}@{manifest.commit}": published.cid}
        if manifest.revision:
            keys[f"{manifest.repo}@{manifest.revision}"] = published.cid
        update_index(store.settings.ipfs_index, keys)
    log.info(
        "snapshot published",
        extra={"repo": manifest.repo, "commit": manifest.commit, "cid": published.cid},
    )
    return PublishResult(
        published.cid,
        manifest.repo,
        manifest.revision,
        manifest.commit,
        len(manifest.files),
        manifest.total_size,
    )


def export(store: ModelStore, ref: str, out: Path, *, repo: str | None = None) -> tuple[Manifest, int]:
    """Write a stored (or local) snapshot to a bundle file; returns its manifest and size."""
    manifest, files = snapshot_manifest(store, find_here(store, ref), repo=repo)
    return manifest, write_bundle(manifest, files, out)


def import_bundle(
    store: ModelStore,
    path: Path,
    *,
    allow_pickle: bool = False,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Snapshot:
    """Place a bundle's snapshot in the store (verified as a pull's files are)."""
    if not path.is_file():
        raise ValidationFailed(f"bundle {path} does not exist")
    meter = ProgressMeter(str(path), progress)
    stop = should_stop or (lambda: False)
    manifest = read_bundle_manifest(path)
    with store.repo_lock(manifest.repo, meter, stop) as repo_dir:
        try:
            fetched = _read_bundle(path, ManifestFetch(manifest, repo_dir, meter, allow_pickle, stop))
        except BaseException:
            # A bundle is local, so nothing is worth keeping for a retry.
            repo_dir.drop_unused_blobs(incomplete=True)
            raise
        snap = store.place(fetched, meter, allow_pickle)
    meter.status(DONE, source="bundle")
    return snap


def _local_repo_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or "model"
    return f"local/{name}"
