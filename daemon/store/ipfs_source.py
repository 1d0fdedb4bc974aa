"""IPFS as a source (and a destination, for publishing), for the store's synchronous code.

The store runs on worker threads; each call here runs the async Kubo client on a private event
loop in the calling thread (``anyio.run``), so it never touches the daemon's own loop. Call
these from a worker thread, not from a coroutine.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio

from hfd.client.errors import Cancelled, FetchError, ValidationFailed
from hfd.daemon.settings import Settings
from hfd.daemon.store.fetch import Fetched, ManifestFetch
from hfd.daemon.store.writer import BlobSink, FileSpec, PlacedFile, existing_blob
from hfd.ipfs.client import KuboClient
from hfd.ipfs.fetch import fetch_file, file_cids, read_manifest
from hfd.ipfs.manifest import Manifest
from hfd.ipfs.publish import Published, publish_snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")


class IpfsFetcher:
    name = "ipfs"

    def __init__(self, settings: Settings) -> None:
        self.api = settings.ipfs_api
        self._auth = settings.ipfs_auth
        self._timeout = settings.ipfs_timeout
        self._connect_timeout = settings.ipfs_connect_timeout

    def client(self) -> KuboClient:
        return KuboClient(
            self.api, auth=self._auth, timeout=self._timeout, connect_timeout=self._connect_timeout
        )

    def _run(self, fn: Callable[[KuboClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with self.client() as client:
                return await fn(client)

        return anyio.run(main)

    def read_manifest(self, cid: str) -> Manifest:
        try:
            return self._run(lambda c: read_manifest(c, cid))
        except ValidationFailed as exc:
            raise FetchError(
                f"ipfs://{cid} has no usable hfd-manifest.json: {exc.message}", details={"source": "ipfs"}
            ) from exc

    def fetch(self, cid: str, job: ManifestFetch) -> Fetched:
        manifest, repo_dir, meter, should_stop = job.manifest, job.repo_dir, job.meter, job.should_stop
        entries = job.planned("ipfs")

        async def run(client: KuboClient) -> Fetched:
            cids = await file_cids(client, cid, manifest)
            placed: list[PlacedFile] = []
            for entry in entries:
                if should_stop():
                    raise Cancelled(f"pull of ipfs://{cid} cancelled")
                meter.begin_file(entry.path)
                spec = FileSpec(entry.path, entry.size, entry.blob, entry.sha256, cids.get(entry.path))
                have = existing_blob(repo_dir, spec)
                if have is not None:
                    meter.add(entry.size)
                else:
                    with BlobSink(repo_dir, spec, on_bytes=meter.add, stop=should_stop) as sink:
                        meter.add(sink.offset)
                        await fetch_file(client, cid, entry, sink)
                        have = sink.finish()
                placed.append(have)
                meter.end_file()
            return Fetched(manifest.repo, manifest.revision, manifest.commit, tuple(placed), "ipfs", cid)

        return self._run(run)

    def publish(self, manifest: Manifest, files: Sequence[tuple[str, Path]]) -> Published:
        return self._run(lambda c: publish_snapshot(c, manifest, files))

    def check(self) -> None:
        """Raise FetchError (reason ``unreachable``) at once when the node is down."""
        self._run(lambda c: c.version())
