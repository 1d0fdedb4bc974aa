"""What may enter the store: no pickled weights unless allowed.

The path and name checks (safe relative paths, repository ids, revisions, commits) live in
``hfd._safe_paths``, which the IPFS manifest uses too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from hfd.backends.formats import PICKLE_SUFFIXES, WEIGHT_SUFFIXES
from hfd.client.errors import Forbidden
from hfd.daemon.store.gguf_tags import select
from hfd.daemon.store.layout import RepoDir
from hfd.daemon.store.space import ensure_space
from hfd.daemon.store.writer import FileSpec
from hfd.ipfs.manifest import Manifest, ManifestFile


def is_pickle(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in PICKLE_SUFFIXES


def is_weight(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in WEIGHT_SUFFIXES


def select_files(paths: Iterable[str], *, allow_pickle: bool, model: str) -> list[str]:
    """The files to place: pickled files are left out unless allowed.

    A model whose only weights are pickled is refused outright (with the files named), since
    leaving them out would store a model that cannot load.
    """
    paths = list(paths)
    if allow_pickle:
        return paths
    pickles = [p for p in paths if is_pickle(p)]
    kept = [p for p in paths if not is_pickle(p)]
    if pickles and not any(is_weight(p) for p in kept):
        raise Forbidden(
            f"{model} has only pickled weights ({', '.join(sorted(pickles)[:5])}); loading them runs "
            "code from the file. Pass --allow-pickle (or allow_pickle = true for this model) to accept them.",
            details={"files": sorted(pickles)},
        )
    return kept


def kept_files(
    manifest: Manifest, repo_dir: RepoDir, *, allow_pickle: bool, tag: str | None = None
) -> list[ManifestFile]:
    """The files of ``manifest`` a pull keeps (pickled weights only when allowed; a GGUF tag's
    files and those without weights when ``tag`` is given), in manifest order, after checking the
    store's filesystem can hold those not stored yet."""
    paths = [f.path for f in manifest.files]
    if tag is not None:
        paths = select(paths, tag, model=f"ipfs manifest of {manifest.repo}@{manifest.commit[:12]}")
    keep = set(select_files(paths, allow_pickle=allow_pickle, model=manifest.repo))
    entries = [f for f in manifest.files if f.path in keep]
    ensure_space(repo_dir, [FileSpec(f.path, f.size, f.blob, f.sha256) for f in entries], model=manifest.repo)
    return entries
