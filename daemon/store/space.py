"""Disk space: a pull checks it before the first byte, and a full disk is ``insufficient_storage``.

A pull knows every file's size before it downloads anything (the manifest, the Hub's listing,
the bundle's manifest), so it can refuse at once, before it fills the disk, when the store's
filesystem cannot hold what is still missing. Space can still run out mid-way (another writer,
a quota): the write's ``ENOSPC``/``EDQUOT`` then becomes the same error, and the pull removes
what it wrote for that model so the disk is not left full.

Client-facing messages name the model and the file, never the store's directory (that goes to
the log): a client of the daemon has no business knowing where the state directory is.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hfd._units import format_bytes
from hfd.client.errors import InsufficientStorage
from hfd.daemon.store.layout import INCOMPLETE_SUFFIX, RepoDir

if TYPE_CHECKING:
    from hfd.daemon.store.writer import FileSpec

log = logging.getLogger(__name__)

# Room kept for what a pull writes besides the blobs (links, refs, the catalog's rows).
RESERVE: Final = 1 << 20
NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def bytes_needed(repo_dir: RepoDir, specs: Iterable[FileSpec]) -> int:
    """What a pull of ``specs`` still has to write: blobs not stored yet, less partial bytes."""
    needed = 0
    for spec in specs:
        if _size(repo_dir.blob(spec.blob)) == spec.size:
            continue
        partial = _size(repo_dir.blob(spec.blob + INCOMPLETE_SUFFIX))
        needed += spec.size - (partial if 0 < partial <= spec.size else 0)
    return needed


def ensure_space(repo_dir: RepoDir, specs: Iterable[FileSpec], *, model: str) -> None:
    """Raise InsufficientStorage when the store's filesystem cannot hold what is left to fetch."""
    needed = bytes_needed(repo_dir, specs)
    if needed == 0:
        return
    free = free_bytes(repo_dir.root)
    if needed + RESERVE <= free:
        return
    log.warning(
        "not enough disk space for a pull",
        extra={"model": model, "path": str(repo_dir.root), "needed": needed, "free": free},
    )
    raise InsufficientStorage(
        f"not enough disk space in the model store for {model}: it needs {format_bytes(needed)} "
        f"({needed} bytes) and {format_bytes(free)} is free; free some space (hfd rm) and pull again",
        details={"model": model, "needed": needed, "free": free, "stage": "pre-check"},
    )


@contextmanager
def dropping_partial_on_full_disk(repo_dir: RepoDir) -> Iterator[None]:
    """A pull that ran out of disk removes what it wrote for the model (use with the repo lock).

    Blobs of the failed pull are not linked by any snapshot yet, and its ``.incomplete``
    files cannot grow until space is freed: keeping them would only keep the disk full.
    """
    try:
        yield
    except InsufficientStorage as exc:
        if exc.details.get("stage") != "pre-check":
            _drop_partial(repo_dir)
        raise
    except OSError as exc:  # linking, refs: anything else that writes
        if not is_no_space(exc):
            raise
        _drop_partial(repo_dir)
        raise no_space_error(exc, repo_dir) from exc


def _drop_partial(repo_dir: RepoDir) -> None:
    repo_dir.clean_staging()
    freed = repo_dir.drop_unused_blobs(incomplete=True)
    log.info("removed the partial download", extra={"repo": repo_dir.repo, "freed": freed})


def no_space_error(
    exc: OSError, repo_dir: RepoDir, *, file: str | None = None, needed: int | None = None
) -> InsufficientStorage:
    """The error for a write that found the disk full; the log gets the directory."""
    model = repo_dir.repo
    free = free_bytes(repo_dir.root)
    log.warning(
        "the disk holding the model store is full",
        extra={
            "model": model,
            "file": file,
            "path": str(repo_dir.root),
            "needed": needed,
            "free": free,
            "error": str(exc),
        },
    )
    where = f"{model}/{file}" if file else model
    more = f", {format_bytes(needed)} ({needed} bytes) more were needed" if needed else ""
    details: dict[str, object] = {"model": model, "free": free, "stage": "writing"}
    if file:
        details["path"] = file
    if needed:
        details["needed"] = needed
    return InsufficientStorage(
        f"the disk holding the model store is full while writing {where} ({format_bytes(free)} free{more}); "
        "free some space (hfd rm) and pull again",
        details=details,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
