"""Finding a model that is here already: in the store, in a Hugging Face cache, or as a local
directory (never fetching), and what to tell a client when it is not.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hfd.daemon.settings import ModelSpec
from hfd.daemon.store.fetch import Attempt, failure
from hfd.daemon.store.gguf_tags import is_tagged, tag_files
from hfd.daemon.store.layout import RepoDir
from hfd.daemon.store.refs import ModelRef
from hfd.daemon.store.snapshot import Snapshot

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore

log = logging.getLogger(__name__)


def find(store: ModelStore, ref: ModelRef | ModelSpec | str) -> Snapshot | None:
    """The snapshot if it is here already (store, HF cache or local directory); never fetches."""
    mref = ref if isinstance(ref, ModelRef) else store.parse(ref)
    if mref.kind == "path":
        assert mref.path is not None
        if mref.path.is_dir():
            return Snapshot(mref.path, str(mref.path), None, None, "local")
        return None
    if mref.kind == "ipfs":
        assert mref.cid is not None
        row = store._catalog_call(lambda: store.catalog.by_cid(mref.cid or ""), None)
        if row is not None and store.layout.repo(row.repo).snapshot(row.commit).is_dir():
            return Snapshot(
                store.layout.repo(row.repo).snapshot(row.commit),
                row.repo,
                row.revision,
                row.commit,
                row.source,
            )
        return None
    assert mref.repo is not None
    repo_dir = store.layout.repo(mref.repo)
    commit = stored_commit(repo_dir, mref)
    if commit is not None:
        found: str = commit  # a name the lambda can capture with its narrowed type
        row = store._catalog_call(lambda: store.catalog.snapshot(mref.repo or "", found), None)
        return Snapshot(
            repo_dir.snapshot(commit), mref.repo, mref.revision, commit, row.source if row else "store"
        )
    if store.hf_layout is not None:
        hf_dir = store.hf_layout.repo(mref.repo)
        commit = stored_commit(hf_dir, mref)
        if commit is not None and any(hf_dir.snapshot(commit).iterdir()):
            return Snapshot(hf_dir.snapshot(commit), mref.repo, mref.revision, commit, "hf-cache")
    return None


def stored_commit(repo_dir: RepoDir, mref: ModelRef) -> str | None:
    """The commit of a stored snapshot that holds what ``mref`` names. A tagged reference is
    found in its tagged pull's snapshot, or in the whole snapshot of its revision when that
    holds the tag's file; an untagged one never in a snapshot only tagged pulls made."""
    if mref.tag is None:
        commit = repo_dir.commit_for(mref.revision)
        refs = [r for r, c in repo_dir.refs_map().items() if c == commit] if commit else []
        return None if refs and all(is_tagged(r) for r in refs) else commit
    for revision in (mref.stored_revision, mref.revision):
        commit = repo_dir.commit_for(revision)
        if commit is not None and tag_files(repo_dir.snapshot_files(commit), mref.tag):
            return commit
    return None


def find_here(store: ModelStore, ref: str) -> Snapshot:
    """The snapshot ``ref`` names, here already, or ``ModelNotFound`` saying where it looked."""
    snap = find(store, ref)
    if snap is None:
        raise failure(ref, local_attempts(store, store.parse(ref)))
    return snap


def local_attempts(store: ModelStore, mref: ModelRef) -> list[Attempt]:
    # The directories go to the log only: clients of the daemon get these messages.
    log.info(
        "model not in the local stores",
        extra={
            "ref": str(mref),
            "store": str(store.root),
            "hf_cache": str(store.hf_layout.root) if store.hf_layout else None,
        },
    )
    out = [Attempt("store", "not there")]
    if store.hf_layout is not None:
        out.append(Attempt("Hugging Face cache", "not there"))
    else:
        out.append(Attempt("Hugging Face cache", "not used (store_use_hf_cache = false)"))
    return out
