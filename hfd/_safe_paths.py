"""Safe relative paths and valid names, shared by the store and the IPFS manifest.

Paths and names here come from manifests, bundles and Hub listings, i.e. from other machines.
Every one is checked before it is joined to a store path, so nothing can land outside the store.
This module sits outside both ``hfd.daemon.store`` and ``hfd.ipfs`` so that neither imports the
other for it (``hfd.ipfs`` imports nothing from the daemon).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Final

from hfd.client.errors import ValidationFailed

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_RE: Final = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}$")
REVISION_RE: Final = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
COMMIT_RE: Final = re.compile(r"^[0-9a-f]{40}$")
MAX_PATH_CHARS: Final = 1024


def check_relpath(path: object, *, what: str = "path") -> str:
    """A file path inside a model: relative, POSIX, no ``..``/``.``/empty parts, no NUL or backslash."""
    if not isinstance(path, str) or not path:
        raise ValidationFailed(f"{what} must be a non-empty string, got {path!r}")
    if len(path) > MAX_PATH_CHARS or "\0" in path or "\\" in path:
        raise ValidationFailed(f"{what} {path!r} is not a safe file path")
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        raise ValidationFailed(f"{what} {path!r} is absolute; only paths inside the model are allowed")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValidationFailed(f"{what} {path!r} has an empty, '.' or '..' part; it could escape the store")
    return path


def check_paths_disjoint(paths: Iterable[str]) -> None:
    """No duplicates, and no file that is also a directory of another file."""
    seen: set[str] = set()
    dirs: set[str] = set()
    for path in paths:
        if path in seen:
            raise ValidationFailed(f"path {path!r} is listed twice")
        seen.add(path)
        parts = path.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    clash = seen & dirs
    if clash:
        raise ValidationFailed(f"path {sorted(clash)[0]!r} is both a file and a directory")


def check_repo(repo: object) -> str:
    if not isinstance(repo, str) or not REPO_RE.match(repo) or "--" in repo or ".." in repo:
        raise ValidationFailed(f"{repo!r} is not a valid repository id (expected 'org/name')")
    return repo


def check_revision(revision: object) -> str:
    if not isinstance(revision, str) or not REVISION_RE.match(revision):
        raise ValidationFailed(f"{revision!r} is not a valid revision")
    check_relpath(revision, what="revision")
    return revision


def check_commit(commit: object) -> str:
    if not isinstance(commit, str) or not COMMIT_RE.match(commit):
        raise ValidationFailed(f"{commit!r} is not a commit hash (40 lowercase hex digits)")
    return commit
