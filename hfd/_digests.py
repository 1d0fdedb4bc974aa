"""Content digests: sha256 (what LFS and the manifest use) and the git blob sha1 (what the Hub's
ETag is for files kept in plain git)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1_RE: Final = re.compile(r"^[0-9a-f]{40}$")
READ_CHUNK: Final = 1 << 20


def is_sha256(value: str) -> bool:
    return bool(SHA256_RE.match(value))


def is_git_sha1(value: str) -> bool:
    return bool(GIT_SHA1_RE.match(value))


class Digester:
    """sha256 of the content, plus the git blob sha1 when the expected size is known up front.

    The git blob id hashes a ``blob <size>\\0`` header before the content, so it can only be
    computed in one pass when the size is known before the first byte.
    """

    def __init__(self, git_size: int | None = None) -> None:
        self._sha256 = hashlib.sha256()
        self._sha1 = None
        self.size = 0
        if git_size is not None:
            self._sha1 = hashlib.sha1(usedforsecurity=False)
            self._sha1.update(b"blob %d\0" % git_size)

    def update(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)
        self.size += len(data)

    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def git_sha1(self) -> str | None:
        return self._sha1.hexdigest() if self._sha1 is not None else None


def digest_file(path: Path, *, git: bool = False) -> Digester:
    """Hash a whole file (following symlinks)."""
    size = path.stat().st_size
    digester = Digester(size if git else None)
    with path.open("rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digester.update(chunk)
    return digester


def sha256_file(path: Path) -> str:
    return digest_file(path).sha256()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def blob_matches(path: Path, blob: str) -> bool:
    """Whether a file's content matches its blob name (sha256 or git sha1)."""
    if is_sha256(blob):
        return sha256_file(path) == blob
    if is_git_sha1(blob):
        return digest_file(path, git=True).git_sha1() == blob
    return False
