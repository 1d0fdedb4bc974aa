"""``hfd-manifest.json``: what lets a box that only has a CID place and verify a model.

    {
      "format": "hfd-manifest", "version": 1,
      "repo": "org/name", "revision": "main", "commit": "<40 hex>",
      "files": [{"path": "config.json", "size": 512, "sha256": "<64 hex>", "blob": "<blob name>"}],
      "ipfs": {"cid_version": 1, "raw_leaves": true, "chunker": "size-262144", "hash": "sha2-256"}
    }

``blob`` is the name the file has under ``blobs/`` in a Hugging Face cache: the sha256 for LFS
files, the git blob sha1 for plain git files. It is optional (default: the sha256). ``ipfs``
records the import settings, so anyone can re-add the files and get the same CID.

Manifests come from other machines: ``parse_manifest`` checks every field and every path
before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from hfd._digests import is_git_sha1, is_sha256
from hfd._safe_paths import (
    check_commit,
    check_paths_disjoint,
    check_relpath,
    check_repo,
    check_revision,
)
from hfd.client.errors import ValidationFailed

MANIFEST_NAME: Final = "hfd-manifest.json"
FORMAT: Final = "hfd-manifest"
VERSION: Final = 1
MAX_MANIFEST_BYTES: Final = 8 * 1024 * 1024
MAX_FILES: Final = 100_000


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str
    blob: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "blob": self.blob}


@dataclass(frozen=True)
class Manifest:
    repo: str
    revision: str | None
    commit: str
    files: tuple[ManifestFile, ...]
    ipfs: dict[str, Any] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "files": [f.to_dict() for f in sorted(self.files, key=lambda f: f.path)],
            "ipfs": self.ipfs,
        }

    def to_json(self) -> bytes:
        # Sorted and compact-but-stable, so the same snapshot always gives the same manifest bytes (and CID).
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode()


def content_commit(files: Iterable[ManifestFile]) -> str:
    """A stand-in commit id for a model that has no git history (a local directory): a digest of
    its file list, so the same content always gets the same snapshot name."""
    h = hashlib.sha1(usedforsecurity=False)
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return h.hexdigest()


def parse_manifest(raw: bytes) -> Manifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValidationFailed(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValidationFailed(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValidationFailed(f"not an {MANIFEST_NAME} (format must be {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ValidationFailed(
            f"{MANIFEST_NAME} version {data.get('version')!r} is not supported (expected {VERSION})"
        )
    repo = check_repo(data.get("repo"))
    revision = data.get("revision")
    if revision is not None:
        check_revision(revision)
    commit = check_commit(data.get("commit"))
    raw_files = data.get("files")
    if not isinstance(raw_files, list) or len(raw_files) > MAX_FILES:
        raise ValidationFailed(f"{MANIFEST_NAME}: 'files' must be a list of at most {MAX_FILES} entries")
    files: list[ManifestFile] = []
    for item in raw_files:
        if not isinstance(item, dict):
            raise ValidationFailed(f"{MANIFEST_NAME}: every file entry must be an object")
        path = check_relpath(item.get("path"))
        if path == MANIFEST_NAME:
            raise ValidationFailed(f"{MANIFEST_NAME} cannot list itself")
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValidationFailed(f"{MANIFEST_NAME}: {path}: size must be a non-negative integer")
        sha256 = item.get("sha256")
        if not isinstance(sha256, str) or not is_sha256(sha256):
            raise ValidationFailed(f"{MANIFEST_NAME}: {path}: sha256 must be 64 lowercase hex digits")
        blob = item.get("blob", sha256)
        if not isinstance(blob, str) or not (is_sha256(blob) or is_git_sha1(blob)):
            raise ValidationFailed(f"{MANIFEST_NAME}: {path}: blob must be a sha256 or a git sha1")
        if is_sha256(blob) and blob != sha256:
            raise ValidationFailed(
                f"{MANIFEST_NAME}: {path}: a sha256 blob name must equal the file's sha256"
            )
        files.append(ManifestFile(path, size, sha256, blob))
    check_paths_disjoint(f.path for f in files)
    ipfs = data.get("ipfs") or {}
    if not isinstance(ipfs, dict):
        raise ValidationFailed(f"{MANIFEST_NAME}: 'ipfs' must be an object")
    return Manifest(repo, revision, commit, tuple(files), ipfs)
