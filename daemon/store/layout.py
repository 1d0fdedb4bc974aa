"""The Hugging Face hub cache layout, which is what the store is on disk.

    <root>/models--{org}--{name}/
        blobs/<sha256 for LFS files, git blob sha1 otherwise>
        snapshots/<commit>/<path>   relative symlinks into ../../blobs
        refs/<revision>             the commit a branch or tag pointed at

Keeping exactly this layout means transformers, optimum and huggingface_hub load a stored model
with ``cache_dir=<root>, local_files_only=True`` and no glue, and an existing hub cache can be
read as is.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hfd._atomic_files import atomic_symlink, atomic_write_text, fsync_dir
from hfd._safe_paths import COMMIT_RE, check_relpath

REPO_PREFIX: Final = "models--"
INCOMPLETE_SUFFIX: Final = ".incomplete"
_STAGING_PREFIX: Final = ".staging-"


def repo_folder_name(repo: str) -> str:
    return REPO_PREFIX + repo.replace("/", "--")


def repo_from_folder(name: str) -> str | None:
    if not name.startswith(REPO_PREFIX):
        return None
    return name[len(REPO_PREFIX) :].replace("--", "/")


@dataclass(frozen=True)
class RepoDir:
    """One ``models--org--name`` folder."""

    repo: str
    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    def blob(self, name: str) -> Path:
        return self.blobs / name

    def snapshot(self, commit: str) -> Path:
        return self.snapshots / commit

    def read_ref(self, revision: str) -> str | None:
        try:
            commit = (self.refs / revision).read_text().strip()
        except (OSError, ValueError):
            return None
        return commit if COMMIT_RE.match(commit) else None

    def write_ref(self, revision: str, commit: str) -> None:
        check_relpath(revision, what="revision")
        atomic_write_text(self.refs / revision, commit)

    def refs_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self.refs.is_dir():
            return out
        for path in self.refs.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                revision = path.relative_to(self.refs).as_posix()
                commit = self.read_ref(revision)
                if commit:
                    out[revision] = commit
        return out

    def commit_for(self, revision: str) -> str | None:
        """The commit a revision names, if that snapshot is here."""
        if COMMIT_RE.match(revision) and self.snapshot(revision).is_dir():
            return revision
        commit = self.read_ref(revision)
        if commit and self.snapshot(commit).is_dir():
            return commit
        return None

    def commits(self) -> list[str]:
        if not self.snapshots.is_dir():
            return []
        return sorted(p.name for p in self.snapshots.iterdir() if COMMIT_RE.match(p.name) and p.is_dir())

    def snapshot_files(self, commit: str) -> dict[str, str]:
        """``{path: blob name}`` for one snapshot (files that are not links into blobs map to '')."""
        base = self.snapshot(commit)
        out: dict[str, str] = {}
        for root, _dirs, names in os.walk(base):
            for name in names:
                link = Path(root) / name
                rel = link.relative_to(base).as_posix()
                out[rel] = Path(os.readlink(link)).name if link.is_symlink() else ""
        return out

    def blob_users(self) -> dict[str, set[str]]:
        """Which snapshots use each blob (by commit)."""
        users: dict[str, set[str]] = {}
        for commit in self.commits():
            for blob in self.snapshot_files(commit).values():
                if blob:
                    users.setdefault(blob, set()).add(commit)
        return users

    def link_snapshot(self, commit: str, files: Mapping[str, str]) -> Path:
        """Make ``snapshots/<commit>`` hold ``{path: blob}`` as relative links into ``blobs/``.

        A new snapshot is built under a staging name and renamed into place in one step, so a
        crash never leaves a snapshot directory that looks complete but is not. An existing
        snapshot (same commit, more files now) gets each link replaced atomically.
        """
        target = self.snapshot(commit)
        self.snapshots.mkdir(parents=True, exist_ok=True)
        build = (
            target
            if target.is_dir()
            else self.snapshots / f"{_STAGING_PREFIX}{commit}-{uuid.uuid4().hex[:8]}"
        )
        for path, blob in files.items():
            check_relpath(path)
            link = build.joinpath(*path.split("/"))
            rel = os.path.relpath(self.blob(blob), link.parent)
            atomic_symlink(rel, link)
        if build != target:
            build.mkdir(parents=True, exist_ok=True)
            os.rename(build, target)
        fsync_dir(self.snapshots)
        return target

    def clean_staging(self) -> None:
        """Remove what an interrupted write left behind (call with the repo lock held)."""
        if self.snapshots.is_dir():
            for path in self.snapshots.iterdir():
                if path.name.startswith(_STAGING_PREFIX):
                    shutil.rmtree(path, ignore_errors=True)

    def drop_unused_blobs(self, *, incomplete: bool) -> int:
        """Delete blobs no snapshot links to (and ``.incomplete`` files when asked); returns bytes freed.

        Call with the repo lock held. Verified blobs of an interrupted pull are unused until the
        pull finishes, so pulls keep them (that is how a pull resumes) and only a failed import
        or ``hfd rm`` drops them.
        """
        if not self.blobs.is_dir():
            return 0
        used = set(self.blob_users())
        freed = 0
        for path in self.blobs.iterdir():
            partial = path.name.endswith(INCOMPLETE_SUFFIX)
            if (partial and incomplete) or (not partial and path.name not in used):
                try:
                    freed += path.stat().st_size
                    path.unlink()
                except OSError:
                    pass
        return freed

    def incomplete(self) -> list[Path]:
        if not self.blobs.is_dir():
            return []
        return [p for p in self.blobs.iterdir() if p.name.endswith(INCOMPLETE_SUFFIX)]


@dataclass(frozen=True)
class CacheLayout:
    """A hub-cache root holding many repo folders."""

    root: Path

    def repo(self, repo: str) -> RepoDir:
        return RepoDir(repo, self.root / repo_folder_name(repo))

    def repos(self) -> Iterator[RepoDir]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            repo = repo_from_folder(path.name)
            if repo and path.is_dir():
                yield RepoDir(repo, path)


def default_hf_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps its cache, by its own rules (without importing it)."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg) / "huggingface" / "hub"
