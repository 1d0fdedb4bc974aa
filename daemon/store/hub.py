"""The Hugging Face Hub as a source, through huggingface_hub's own download code.

One ``model_info(files_metadata=True)`` call gives the commit and every file's size and digest
(the LFS sha256, or the git blob sha1 for plain git files); each file is then resolved with
``get_hf_file_metadata`` (redirects, ETag) and streamed with ``http_get`` into the store's
verifying ``BlobSink``, resuming from a previous attempt's ``.incomplete`` bytes. ``endpoint=``
is passed on every call, so ``hub_endpoint``/``HF_ENDPOINT`` select a mirror (or the test
suite's local server) without touching huggingface_hub's import-time globals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from hfd._digests import is_git_sha1, is_sha256
from hfd._safe_paths import check_commit, check_paths_disjoint, check_relpath
from hfd.client.errors import Cancelled, FetchError, InsufficientStorage, ModelNotFound, VerificationFailed
from hfd.daemon.store import gguf_tags
from hfd.daemon.store.fetch import Fetched
from hfd.daemon.store.layout import RepoDir
from hfd.daemon.store.pull import ProgressMeter
from hfd.daemon.store.safety import select_files
from hfd.daemon.store.space import ensure_space
from hfd.daemon.store.writer import BlobSink, FileSpec, PlacedFile, existing_blob

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT: Final = "https://huggingface.co"


def hub_endpoint(configured: str | None) -> str:
    return (configured or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline(configured: bool) -> bool:
    return configured or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HubListing:
    commit: str
    files: tuple[FileSpec, ...]


class HubFetcher:
    name = "hub"

    def __init__(self, endpoint: str, *, timeout: float = 30.0, token: str | bool | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        # None: huggingface_hub finds the token the usual way (HF_TOKEN, the saved login).
        self.token = token

    def list_files(self, repo: str, revision: str) -> HubListing:
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self.endpoint).model_info(
                repo, revision=revision, files_metadata=True, timeout=self.timeout, token=self.token
            )
        except Exception as exc:
            raise self._error(exc, f"{repo}@{revision}") from exc
        commit = check_commit(info.sha)
        files: list[FileSpec] = []
        for sib in info.siblings or []:
            path = check_relpath(sib.rfilename)
            if sib.lfs is not None:
                sha256 = str(sib.lfs.sha256)
                files.append(FileSpec(path, int(sib.lfs.size), sha256, sha256))
            elif sib.blob_id is not None and sib.size is not None:
                files.append(FileSpec(path, int(sib.size), str(sib.blob_id), None))
            else:
                raise FetchError(f"the Hub gave no size or digest for {repo}/{path}; cannot verify it")
            if not (is_sha256(files[-1].blob) or is_git_sha1(files[-1].blob)):
                raise FetchError(f"the Hub gave an unusable digest for {repo}/{path}: {files[-1].blob!r}")
        check_paths_disjoint(f.path for f in files)
        return HubListing(commit, tuple(files))

    def fetch(
        self,
        repo_dir: RepoDir,
        revision: str,
        meter: ProgressMeter,
        *,
        allow_pickle: bool,
        should_stop: Callable[[], bool],
        tag: str | None = None,
    ) -> Fetched:
        """The revision's files (only a GGUF tag's, with the files that hold no weights, when
        ``tag`` is given: ``hfd.daemon.store.gguf_tags``), verified into ``repo_dir``'s blobs."""
        repo = repo_dir.repo
        listing = self.list_files(repo, revision)
        paths = [f.path for f in listing.files]
        if tag is not None:
            paths = gguf_tags.select(paths, tag, model=f"{repo}@{revision}")
        keep = set(select_files(paths, allow_pickle=allow_pickle, model=repo))
        specs = [f for f in listing.files if f.path in keep]
        asked = set(paths)
        skipped = sorted(f.path for f in listing.files if f.path not in keep and f.path in asked)
        if skipped:
            log.info("leaving out pickled files", extra={"repo": repo, "files": skipped})
        ensure_space(repo_dir, specs, model=repo)
        meter.plan("hub", len(specs), sum(f.size for f in specs))
        placed: list[PlacedFile] = []
        for spec in specs:
            if should_stop():
                raise Cancelled(f"pull of {repo} cancelled")
            meter.begin_file(spec.path)
            have = existing_blob(repo_dir, spec)
            if have is not None:
                meter.add(spec.size)
            else:
                have = self._download(repo, listing.commit, spec, repo_dir, meter, should_stop)
            placed.append(have)
            meter.end_file()
        return Fetched(repo, gguf_tags.tagged_revision(revision, tag), listing.commit, tuple(placed), "hub")

    def _download(
        self,
        repo: str,
        commit: str,
        spec: FileSpec,
        repo_dir: RepoDir,
        meter: ProgressMeter,
        should_stop: Callable[[], bool],
    ) -> PlacedFile:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(repo, spec.path, revision=commit, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self.token, timeout=self.timeout, endpoint=self.endpoint)
        except Exception as exc:
            raise self._error(exc, f"{repo}/{spec.path}") from exc
        if meta.etag and meta.etag != spec.blob:
            raise VerificationFailed(
                f"{spec.path}: the Hub's ETag {meta.etag} does not match its listing ({spec.blob})",
                details={"path": spec.path},
            )
        headers = build_hf_headers(token=self.token)
        headers["Accept-Encoding"] = "identity"  # sizes and digests are of the raw bytes
        if urlsplit(meta.location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # never send the Hub token to a CDN/storage host
        with BlobSink(repo_dir, spec, on_bytes=meter.add, stop=should_stop) as sink:
            meter.add(sink.offset)
            try:
                http_get(
                    meta.location,
                    sink,  # type: ignore[arg-type]  # a file-like sink, as http_get only writes
                    resume_size=sink.offset,
                    headers=headers,
                    expected_size=spec.size,
                    tqdm_class=_Silent,
                )
            except (Cancelled, VerificationFailed, InsufficientStorage):
                raise
            except Exception as exc:
                raise self._error(exc, f"{repo}/{spec.path}") from exc
            return sink.finish()

    def _error(self, exc: Exception, what: str) -> FetchError | ModelNotFound:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(exc, GatedRepoError):
            return FetchError(
                f"{what} is gated on the Hub: log in (HF_TOKEN) with access to it", details={"source": "hub"}
            )
        if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)):
            return ModelNotFound(
                f"{what} does not exist on the Hub ({self.endpoint})", details={"source": "hub"}
            )
        if isinstance(exc, OfflineModeIsEnabled):
            return FetchError(
                "the Hub is disabled (HF_HUB_OFFLINE)", details={"source": "hub", "reason": "offline"}
            )
        return FetchError(
            f"Hub request for {what} failed: {exc}", details={"source": "hub", "reason": "error"}
        )


class _Silent:
    """A tqdm stand-in: the store reports progress itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
