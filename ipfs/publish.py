"""Publishing a snapshot: add its files plus ``hfd-manifest.json`` as one UnixFS directory, pinned.

The import settings (CID version, raw leaves, chunker, hash) are fixed here and written into the
manifest, so anyone who adds the same files with the same settings gets the same root CID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hfd.ipfs.client import AddEntry, ImportOptions, KuboClient
from hfd.ipfs.manifest import MANIFEST_NAME, Manifest

IMPORT_OPTIONS: Final = ImportOptions(cid_version=1, raw_leaves=True, chunker="size-262144", hash="sha2-256")
ROOT_NAME: Final = "model"


@dataclass(frozen=True)
class Published:
    cid: str
    file_cids: dict[str, str]
    options: ImportOptions


async def publish_snapshot(
    client: KuboClient,
    manifest: Manifest,
    files: Sequence[tuple[str, Path]],
    *,
    options: ImportOptions = IMPORT_OPTIONS,
    pin: bool = True,
) -> Published:
    """Add ``files`` (``(path in the model, file on disk)``) and the manifest; return the root CID."""
    entries = [AddEntry(path, source) for path, source in files]
    entries.append(AddEntry(MANIFEST_NAME, data=manifest.to_json()))
    cids = await client.add(ROOT_NAME, entries, options=options, pin=pin)
    root = cids.pop("")
    if pin:
        # Pinning at add time is the node's default; pin explicitly too, since not every node honours it.
        await client.pin_add(root)
    return Published(root, {p: c for p, c in cids.items() if p != MANIFEST_NAME}, options)
