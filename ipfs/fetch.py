"""Fetching a published snapshot by CID: read its manifest, then stream every file into a sink.

The sink (the store's ``BlobSink``) hashes while it writes and verifies against the manifest;
a file whose sink already holds some bytes (an interrupted pull) resumes with ``cat --offset``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from hfd.client.errors import FetchError
from hfd.ipfs.client import KuboClient
from hfd.ipfs.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ManifestFile, parse_manifest

log = logging.getLogger(__name__)


class Sink(Protocol):
    @property
    def offset(self) -> int: ...

    def write(self, data: bytes | memoryview) -> int: ...


async def read_manifest(client: KuboClient, cid: str) -> Manifest:
    raw = await client.cat_bytes(f"/ipfs/{cid}/{MANIFEST_NAME}", max_bytes=MAX_MANIFEST_BYTES)
    return parse_manifest(raw)


async def fetch_file(client: KuboClient, cid: str, entry: ManifestFile, sink: Sink) -> None:
    """Stream one file of snapshot ``cid`` into ``sink``, from where the sink left off."""
    start = sink.offset
    if start < entry.size:
        await client.cat_into(f"/ipfs/{cid}/{entry.path}", sink.write, offset=start)
    if sink.offset != entry.size:
        # A node that fails mid-stream reports it only in the X-Stream-Error trailer; the short
        # length is how it shows here.
        raise FetchError(
            f"IPFS stream of {entry.path} ended after {sink.offset} of {entry.size} bytes",
            details={"source": "ipfs", "reason": "error", "path": entry.path},
        )


async def file_cids(client: KuboClient, cid: str, manifest: Manifest) -> dict[str, str]:
    """The CID of every file in the snapshot (one ``ls`` per directory)."""
    wanted = {f.path for f in manifest.files}
    dirs = {""} | {p.rsplit("/", 1)[0] for p in wanted if "/" in p}
    out: dict[str, str] = {}
    for d in sorted(dirs):
        try:
            links = await client.ls(f"/ipfs/{cid}/{d}" if d else cid)
        except FetchError as exc:
            log.info("cannot list snapshot directory", extra={"cid": cid, "dir": d, "error": str(exc)})
            continue
        for link in links:
            path = f"{d}/{link.name}" if d else link.name
            if path in wanted and not link.is_dir:
                out[path] = link.cid
    return out


def describe(manifest: Manifest) -> dict[str, Any]:
    return {
        "repo": manifest.repo,
        "commit": manifest.commit,
        "files": len(manifest.files),
        "bytes": manifest.total_size,
    }
