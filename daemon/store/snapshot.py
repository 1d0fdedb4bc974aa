"""What the store hands out: a snapshot directory and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from hfd.daemon.store.writer import PlacedFile

# Where a snapshot came from: a local directory used in place, an existing Hugging Face cache
# read as is, or the store (pulled from IPFS or the Hub, or imported from a bundle).
Source = Literal["local", "hf-cache", "store", "ipfs", "hub", "bundle"]


@dataclass(frozen=True)
class Snapshot:
    path: Path  # the snapshot directory (config.json, weights, tokenizer files)
    repo: str  # org/name; the directory path for a local model
    revision: str | None  # what was asked for (branch, tag or commit); None for a local directory
    commit: str | None  # the commit the files belong to; None for a local directory
    source: str  # a Source value

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "source": self.source,
        }


@dataclass(frozen=True)
class SnapshotInfo:
    """A stored snapshot as ``hfd ls``/``hfd show`` present it."""

    snapshot: Snapshot
    refs: tuple[str, ...]
    size: int
    file_count: int
    task: str | None
    cid: str | None
    pulled_at: datetime | None
    last_used: datetime | None
    files: tuple[PlacedFile, ...] = field(default=())
    missing: tuple[str, ...] = field(default=())  # paths whose blob is gone (quarantined): re-pull

    def to_dict(self) -> dict[str, Any]:
        out = self.snapshot.to_dict()
        out.update(
            refs=list(self.refs),
            size=self.size,
            file_count=self.file_count,
            task=self.task,
            cid=self.cid,
            pulled_at=self.pulled_at.isoformat() + "Z" if self.pulled_at else None,
            last_used=self.last_used.isoformat() + "Z" if self.last_used else None,
        )
        if self.missing:
            out["missing"] = list(self.missing)
        if self.files:
            out["files"] = [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "blob": f.blob, "cid": f.cid}
                for f in self.files
            ]
        return out
