"""Re-verifying what is stored: ``hfd verify``, the check before a model loads, and quarantine.

Every blob is verified once, as it is written. Disks and people change files afterwards, so:

- ``verify(store, ref)`` (``hfd verify [MODEL]``) re-hashes every blob of the store (or of one
  model) against the catalog's sha256 (the blob's name when the catalog has no row) and moves
  each bad one out of ``blobs/`` into ``<state_dir>/quarantine/``, marking it in the catalog.
  The snapshot's link then dangles, so ``hfd pull`` sees the model as incomplete and fetches
  that file again.
- ``check_loadable(store, snap)`` runs before a model loads: each file's size against the
  catalog, and a full hash of every blob whose file is not the one last verified (size, mtime,
  ctime and inode as recorded when it was hashed; a blob never hashed since it was stored counts
  as changed). A damaged model is refused with ``model_unavailable`` saying what to run.
- ``hash_ok`` bounds its read rate when asked (the background scrub, ``daemon/store/scrub.py``).

Only hfd's own store is checked and written; an existing Hugging Face cache and local
directories are read as they are.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hfd._digests import READ_CHUNK, Digester, is_git_sha1, is_sha256
from hfd.client.errors import HfdError, InvalidRequest, ModelUnavailable
from hfd.daemon.store.catalog import BlobCheck, utcnow
from hfd.daemon.store.layout import RepoDir, repo_folder_name
from hfd.daemon.store.locks import FileLock, lock_path
from hfd.daemon.store.lookup import find_here
from hfd.daemon.store.snapshot import Snapshot

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore

log = logging.getLogger(__name__)

QUARANTINE_DIR: Final = "quarantine"
LOAD_LOCK_WAIT: Final = 5.0  # seconds a load waits for the repo lock to quarantine; refused anyway
MISSING: Final = "missing"

Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


@dataclass(frozen=True)
class Expected:
    """What one blob must be: from the catalog's file rows, else from its name."""

    blob: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class BadBlob:
    repo: str
    blob: str
    problem: str  # "missing", "size 12 != 13", "sha256 ... != ..."
    files: tuple[str, ...]  # snapshot paths that use it, as "<commit12>/<path>"
    quarantined: bool  # moved out of blobs/ now (False: it was already gone)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "blob": self.blob,
            "problem": self.problem,
            "files": list(self.files),
            "quarantined": self.quarantined,
        }


@dataclass
class VerifyReport:
    blobs: int = 0  # blobs looked at
    hashed_bytes: int = 0
    bad: list[BadBlob] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blobs": self.blobs,
            "hashed_bytes": self.hashed_bytes,
            "bad": [b.to_dict() for b in self.bad],
        }


# ----------------------------------------------------------------------------- hashing


def stat_key(path: Path) -> Stat | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def hash_ok(
    path: Path,
    expected: Expected,
    *,
    rate: float | None = None,
    stop: threading.Event | None = None,
) -> str | None:
    """None when the file hashes to what is expected, else the problem (``rate``: bytes/s at most)."""
    key = stat_key(path)
    if key is None:
        return MISSING
    size = key[0]
    if expected.size is not None and size != expected.size:
        return f"size {size} != expected {expected.size}"
    git = expected.sha256 is None and is_git_sha1(expected.blob)
    digester = Digester(size if git else None)
    started = time.monotonic()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                if stop is not None and stop.is_set():
                    raise InterruptedError("verification stopped")
                digester.update(chunk)
                if rate:
                    ahead = digester.size / rate - (time.monotonic() - started)
                    if ahead > 0:
                        (stop.wait if stop is not None else time.sleep)(ahead)
    except FileNotFoundError:
        return MISSING
    if digester.size != size:
        return f"size changed while it was read ({size} -> {digester.size})"
    want = expected.sha256 or (expected.blob if is_sha256(expected.blob) else None)
    if want is not None:
        got = digester.sha256()
        return None if got == want else f"sha256 {got} != expected {want}"
    got_sha1 = digester.git_sha1()
    return None if got_sha1 == expected.blob else f"git blob sha1 {got_sha1} != expected {expected.blob}"


# ----------------------------------------------------------------------------- quarantine


def quarantine_dir(store: ModelStore, repo: str) -> Path:
    return store.settings.state_dir / QUARANTINE_DIR / repo_folder_name(repo)


def quarantine(store: ModelStore, repo_dir: RepoDir, blob: str, problem: str) -> bool:
    """Move a bad blob out of ``blobs/`` (call with the repo lock held); True when one was moved."""
    src = repo_dir.blob(blob)
    moved = False
    if src.exists():
        dest_dir = quarantine_dir(store, repo_dir.repo)
        target = dest_dir / f"{blob}.{utcnow().strftime('%Y%m%dT%H%M%S%f')}"
        kept: Path | None = target
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(src, target)  # a rename on one filesystem, copy and delete across two
        except OSError as exc:
            # Kept nowhere (a full or read-only quarantine disk): a bad blob must still leave blobs/.
            log.warning("cannot keep a bad blob in quarantine; deleting it", extra={"error": str(exc)})
            src.unlink(missing_ok=True)
            kept = None
        moved = True
        log.warning(
            "blob quarantined",
            extra={
                "repo": repo_dir.repo,
                "blob": blob,
                "problem": problem,
                "moved_to": str(kept) if kept else None,
            },
        )
    store._catalog_call(lambda: store.catalog.record_quarantined(repo_dir.repo, blob, problem), None)
    return moved


@dataclass
class _Blob:
    expected: Expected
    files: list[str] = field(default_factory=list)


def _blobs_of(store: ModelStore, repo_dir: RepoDir, commits: list[str]) -> dict[str, _Blob]:
    """Every blob the snapshots use, with what it must be and who uses it."""
    out: dict[str, _Blob] = {}
    for commit in commits:
        rows = {
            f.path: f for f in store._catalog_call(partial(store.catalog.files, repo_dir.repo, commit), [])
        }
        for path, blob in sorted(repo_dir.snapshot_files(commit).items()):
            if not blob:
                continue  # a plain file in a snapshot: not something hfd placed
            row = rows.get(path)
            entry = out.get(blob)
            if entry is None or (entry.expected.sha256 is None and row is not None):
                entry = _Blob(
                    Expected(blob, row.size if row else None, row.sha256 if row else None),
                    entry.files if entry else [],
                )
                out[blob] = entry
            entry.files.append(f"{commit[:12]}/{path}")
    return out


# ----------------------------------------------------------------------------- hfd verify


def _targets(store: ModelStore, ref: str | None) -> Iterator[tuple[RepoDir, list[str]]]:
    if ref is None:
        for repo_dir in store.layout.repos():
            yield repo_dir, repo_dir.commits()
        return
    snap = find_here(store, ref)
    if snap.source in ("local", "hf-cache") or snap.commit is None:
        raise InvalidRequest(
            f"{ref} is not in hfd's store (it is a {'local directory' if snap.source == 'local' else 'Hugging Face cache entry'}); "
            "hfd verify checks only the store"
        )
    yield store.layout.repo(snap.repo), [snap.commit]


def verify(store: ModelStore, ref: str | None = None) -> VerifyReport:
    """Re-hash every blob of the store (or of one model), quarantining the bad ones."""
    report = VerifyReport()
    for repo_dir, commits in _targets(store, ref):
        blobs = _blobs_of(store, repo_dir, commits)
        checks: dict[str, BlobCheck] = store._catalog_call(
            partial(store.catalog.blob_checks, repo_dir.repo), {}
        )
        good: list[tuple[str, Stat]] = []
        bad: list[tuple[str, str]] = []
        for blob, entry in blobs.items():
            report.blobs += 1
            before = stat_key(repo_dir.blob(blob))
            problem = hash_ok(repo_dir.blob(blob), entry.expected)
            if problem is None and before is not None:
                report.hashed_bytes += before[0]
                good.append((blob, before))
            elif problem is not None:
                row = checks.get(blob)
                if problem == MISSING and row is not None and row.quarantined_at is not None:
                    problem = f"{MISSING} (quarantined {row.quarantined_at:%Y-%m-%d %H:%M}: {row.problem})"
                bad.append((blob, problem))
        store._catalog_call(partial(store.catalog.record_verified, repo_dir.repo, good), None)
        if bad:
            with store.repo_lock(repo_dir.repo):
                for blob, problem in bad:
                    moved = (
                        quarantine(store, repo_dir, blob, problem)
                        if not problem.startswith(MISSING)
                        else False
                    )
                    report.bad.append(BadBlob(repo_dir.repo, blob, problem, tuple(blobs[blob].files), moved))
    log.info(
        "store verified",
        extra={"blobs": report.blobs, "bytes": report.hashed_bytes, "bad": len(report.bad), "model": ref},
    )
    return report


# ----------------------------------------------------------------------------- before a load


def check_loadable(store: ModelStore, snap: Snapshot, *, ref: str | None = None) -> None:
    """Refuse a stored snapshot whose files are missing or changed since they were verified.

    Cheap when nothing changed: one stat per file and two catalog reads. A blob whose file is
    not the one last verified is hashed in full (once; then its new state is recorded).
    """
    if snap.source in ("local", "hf-cache") or snap.commit is None:
        return
    repo_dir = store.layout.repo(snap.repo)
    blobs = _blobs_of(store, repo_dir, [snap.commit])
    checks: dict[str, BlobCheck] = store._catalog_call(lambda: store.catalog.blob_checks(snap.repo), {})
    good: list[tuple[str, Stat]] = []
    bad: dict[str, str] = {}
    for blob, entry in blobs.items():
        key = stat_key(repo_dir.blob(blob))
        if key is None:
            row = checks.get(blob)
            bad[blob] = MISSING + (f" (quarantined: {row.problem})" if row and row.quarantined_at else "")
            continue
        if entry.expected.size is not None and key[0] != entry.expected.size:
            bad[blob] = f"size {key[0]} != expected {entry.expected.size}"
            continue
        row = checks.get(blob)
        if row is not None and row.matches(key):
            continue
        problem = hash_ok(repo_dir.blob(blob), entry.expected)
        if problem is None:
            good.append((blob, key))
        else:
            bad[blob] = problem
    if good:
        log.info("blobs re-verified before loading", extra={"repo": snap.repo, "blobs": len(good)})
        store._catalog_call(lambda: store.catalog.record_verified(snap.repo, good), None)
    if not bad:
        return
    to_move = {b: p for b, p in bad.items() if not p.startswith(MISSING)}
    if to_move:
        try:
            with FileLock(lock_path(store.locks_dir, f"repo:{snap.repo}"), timeout=LOAD_LOCK_WAIT):
                for blob, problem in to_move.items():
                    quarantine(store, repo_dir, blob, problem)
        except HfdError as exc:  # the lock is busy (a pull): refuse anyway, hfd verify quarantines later
            log.warning("could not quarantine now", extra={"repo": snap.repo, "error": exc.message})
    files = sorted(f.split("/", 1)[1] for b in bad for f in blobs[b].files)
    snap_row = store._catalog_call(lambda: store.catalog.snapshot(snap.repo, snap.commit or ""), None)
    again = (
        f"ipfs://{snap_row.cid}"
        if snap_row is not None and snap_row.source == "ipfs" and snap_row.cid
        else None
    )
    again = again or ref or f"{snap.repo}@{snap.revision or snap.commit}"
    log.error(
        "refusing to load a damaged model",
        extra={"repo": snap.repo, "commit": snap.commit, "problems": bad, "path": str(snap.path)},
    )
    raise ModelUnavailable(
        f"model {snap.repo}@{(snap.commit or '')[:12]} is damaged: {len(files)} file(s) missing or "
        f"failed verification ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''}); "
        f"run `hfd pull {again}` to fetch them again (`hfd verify` checks the whole store)",
        details={"reason": "damaged", "files": files, "repo": snap.repo, "commit": snap.commit},
    )
