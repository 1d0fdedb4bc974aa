"""Writing one verified blob into the store.

A blob is written to ``blobs/<name>.incomplete`` (same directory, same filesystem), hashed as
it is written, flushed to disk, checked against the digest the source promised, and only then
renamed to ``blobs/<name>``. A pull that dies leaves only the ``.incomplete`` file, which the
next pull resumes from (its bytes are re-hashed first, so a resumed file is verified as a whole).
A full disk (``ENOSPC``) deletes the partial file and raises ``InsufficientStorage``: keeping
it would keep the disk full, and nothing can resume until space is freed anyway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from hfd._atomic_files import fsync_dir
from hfd._digests import READ_CHUNK, Digester, is_git_sha1, is_sha256, sha256_file
from hfd.client.errors import Cancelled, InsufficientStorage, VerificationFailed
from hfd.daemon.store.layout import INCOMPLETE_SUFFIX, RepoDir
from hfd.daemon.store.space import is_no_space, no_space_error
from hfd.ipfs.manifest import ManifestFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSpec:
    """A file a source promises: where it goes, how big it is, and what it must hash to."""

    path: str
    size: int
    blob: str  # the blob name: sha256 (LFS / manifest) or git blob sha1 (plain git file on the Hub)
    sha256: str | None = None  # known content sha256 (None: only the git sha1 is known)
    cid: str | None = None


@dataclass(frozen=True)
class PlacedFile(ManifestFile):
    """A file that is in the store and verified: its manifest entry (path, size, sha256, blob)
    and the CID it is known under."""

    cid: str | None = None
    # Hashed just now as it was written (False: an existing blob reused on its size alone);
    # the store records a verification time for these only.
    hashed: bool = False


class BlobSink:
    """A writable, resumable, verifying file for one blob (also usable as ``http_get``'s temp file)."""

    def __init__(
        self,
        repo_dir: RepoDir,
        spec: FileSpec,
        *,
        on_bytes: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        if not (is_sha256(spec.blob) or is_git_sha1(spec.blob)):
            raise VerificationFailed(
                f"{spec.path}: blob name {spec.blob!r} is neither a sha256 nor a git sha1"
            )
        self.spec = spec
        self.repo_dir = repo_dir
        self.final = repo_dir.blob(spec.blob)
        self.partial = self.final.with_name(spec.blob + INCOMPLETE_SUFFIX)
        self._on_bytes = on_bytes
        self._stop = stop
        self._git = is_git_sha1(spec.blob)
        self._digester = Digester(spec.size if self._git else None)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._fh: BinaryIO = self._open()

    def _open(self) -> BinaryIO:
        if self.partial.exists() and self.partial.stat().st_size <= self.spec.size:
            fh = self.partial.open("r+b")
            while chunk := fh.read(READ_CHUNK):
                self._digester.update(chunk)
            if self._digester.size:
                log.info("resuming blob", extra={"path": self.spec.path, "offset": self._digester.size})
            return fh
        return self.partial.open("wb")

    @property
    def offset(self) -> int:
        """Bytes already in the partial file (where a resumed download starts)."""
        return self._digester.size

    # -- file-object protocol (huggingface_hub's http_get writes, tells, seeks to 0 and truncates)
    def write(self, data: bytes | memoryview) -> int:
        if self._stop is not None and self._stop():
            raise Cancelled(f"pull cancelled while writing {self.spec.path}")
        if self._digester.size + len(data) > self.spec.size:
            self.abort(keep=False)
            raise VerificationFailed(
                f"{self.spec.path}: source sent more than the {self.spec.size} bytes it announced",
                details={"path": self.spec.path},
            )
        try:
            self._fh.write(data)
        except OSError as exc:
            if is_no_space(exc):
                raise self._no_space(exc) from exc
            raise
        self._digester.update(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        return len(data)

    def tell(self) -> int:
        return self._digester.size

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset != 0 or whence != 0:
            raise OSError("a blob can only be rewound to its start")
        self.restart()
        return 0

    def truncate(self, size: int | None = None) -> int:
        if size not in (None, 0):
            raise OSError("a blob can only be truncated to nothing")
        self.restart()
        return 0

    def flush(self) -> None:
        self._fh.flush()

    def restart(self) -> None:
        """Drop what was written (the source ignored a range request and sends from byte 0)."""
        if self._on_bytes is not None and self._digester.size:
            self._on_bytes(-self._digester.size)
        self._fh.seek(0)
        self._fh.truncate()
        self._digester = Digester(self.spec.size if self._git else None)

    def finish(self) -> PlacedFile:
        """Flush, verify, and move into place; a mismatch deletes the file and raises."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            if is_no_space(exc):
                raise self._no_space(exc) from exc
            raise
        self._fh.close()
        sha256 = self._digester.sha256()
        problem = None
        if self._digester.size != self.spec.size:
            problem = f"size {self._digester.size} != expected {self.spec.size}"
        elif self.spec.sha256 is not None and sha256 != self.spec.sha256:
            problem = f"sha256 {sha256} != expected {self.spec.sha256}"
        elif self._git and self._digester.git_sha1() != self.spec.blob:
            problem = f"git blob sha1 {self._digester.git_sha1()} != expected {self.spec.blob}"
        elif not self._git and sha256 != self.spec.blob:
            problem = f"sha256 {sha256} != blob name {self.spec.blob}"
        if problem is not None:
            self.partial.unlink(missing_ok=True)
            log.warning("blob rejected", extra={"path": self.spec.path, "problem": problem})
            raise VerificationFailed(
                f"{self.spec.path} failed verification ({problem}); it was not stored",
                details={"path": self.spec.path},
            )
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)
        return PlacedFile(self.spec.path, self.spec.size, sha256, self.spec.blob, self.spec.cid, hashed=True)

    def _no_space(self, exc: OSError) -> InsufficientStorage:
        """A full disk: drop the partial file and say so."""
        written = self._digester.size
        self._close_quietly()
        self.partial.unlink(missing_ok=True)
        return no_space_error(exc, self.repo_dir, file=self.spec.path, needed=self.spec.size - written)

    def _close_quietly(self) -> None:
        try:
            self._fh.close()  # flushing what is buffered can fail the same way
        except OSError:
            pass

    def abort(self, *, keep: bool = True) -> None:
        """Stop writing; keep the partial file for a resume unless it is known bad."""
        if not self._fh.closed:
            try:
                self._fh.flush()
            except OSError:
                keep = False  # a partial file that cannot be flushed is not worth resuming
            self._close_quietly()
        if not keep:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> BlobSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._fh.closed:
            self.abort(keep=not isinstance(exc, (VerificationFailed, InsufficientStorage)))


def existing_blob(repo_dir: RepoDir, spec: FileSpec) -> PlacedFile | None:
    """The blob is already stored (another snapshot of this repo has the same content)."""
    path = repo_dir.blob(spec.blob)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size != spec.size:
        return None
    sha256 = spec.sha256 or (spec.blob if is_sha256(spec.blob) else None)
    if sha256 is None:
        sha256 = sha256_file(path)
    return PlacedFile(spec.path, spec.size, sha256, spec.blob, spec.cid)
