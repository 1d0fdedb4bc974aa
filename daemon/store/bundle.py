"""Offline bundles: one tar holding ``hfd-manifest.json`` first, then the model's files.

A bundle moves a model to a box with no network (``hfd export`` here, ``hfd import`` there).
Reading one is strict, since it comes from elsewhere: the manifest must come first, every
other member must be a regular file the manifest lists (no links, devices, ``..`` or absolute
names), sizes must match, and every file is verified against its sha256 as it streams into the
store. Members are never extracted by name; they are written to ``blobs/<digest>`` only.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

from hfd._atomic_files import atomic_file
from hfd._digests import READ_CHUNK
from hfd._safe_paths import check_relpath
from hfd.client.errors import Cancelled, ValidationFailed, VerificationFailed
from hfd.daemon.store.fetch import Fetched, ManifestFetch
from hfd.daemon.store.writer import BlobSink, FileSpec, PlacedFile, existing_blob
from hfd.ipfs.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, parse_manifest

log = logging.getLogger(__name__)

_FILE_MODE: Final = 0o644


def _info(name: str, size: int) -> tarfile.TarInfo:
    # Fixed owner, mode and time: the same snapshot always gives the same bundle bytes.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = _FILE_MODE
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_bundle(manifest: Manifest, files: Sequence[tuple[str, Path]], out: Path) -> int:
    """Write the bundle atomically; returns its size in bytes."""
    with atomic_file(out) as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = manifest.to_json()
        tar.addfile(_info(MANIFEST_NAME, len(data)), io.BytesIO(data))
        for path, source in sorted(files):
            with source.open("rb") as fh:
                tar.addfile(_info(path, os.fstat(fh.fileno()).st_size), fh)
    return out.stat().st_size


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError) as exc:
        raise ValidationFailed(f"{path} is not a readable bundle (tar): {exc}") from exc


def _read_manifest(tar: tarfile.TarFile, path: Path) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isreg():
        raise ValidationFailed(f"{path}: a bundle must start with {MANIFEST_NAME}")
    if first.size > MAX_MANIFEST_BYTES:
        raise ValidationFailed(f"{path}: {MANIFEST_NAME} is too large")
    fh = tar.extractfile(first)
    assert fh is not None
    return parse_manifest(fh.read())


def read_bundle_manifest(path: Path) -> Manifest:
    with _open(path) as tar:
        return _read_manifest(tar, path)


def import_bundle(path: Path, job: ManifestFetch) -> Fetched:
    """Verify and store every file of a bundle (call with the repo lock held); the caller links
    and records the snapshot."""
    manifest, repo_dir, meter, should_stop = job.manifest, job.repo_dir, job.meter, job.should_stop
    keep = {f.path for f in job.planned("bundle")}
    wanted = {f.path: f for f in manifest.files}
    placed: dict[str, PlacedFile] = {}
    seen: set[str] = set()
    with _open(path) as tar:
        if _read_manifest(tar, path) != manifest:
            raise ValidationFailed(f"{path} changed while it was being imported")
        # next(), not iteration: iterating a stream-mode TarFile starts again at the manifest.
        while (member := tar.next()) is not None:
            if should_stop():
                raise Cancelled(f"import of {path} cancelled")
            name = member.name
            if member.isdir():
                check_relpath(name.rstrip("/"), what="bundle member")
                continue
            if not member.isreg():
                kind = "link" if (member.issym() or member.islnk()) else "special file"
                raise ValidationFailed(
                    f"{path}: member {name!r} is a {kind}; bundles may hold regular files only"
                )
            check_relpath(name, what="bundle member")
            entry = wanted.get(name)
            if entry is None:
                raise ValidationFailed(f"{path}: member {name!r} is not listed in {MANIFEST_NAME}")
            if name in seen:
                raise ValidationFailed(f"{path}: member {name!r} appears twice")
            seen.add(name)
            if member.size != entry.size:
                raise VerificationFailed(
                    f"{name}: the bundle holds {member.size} bytes, the manifest says {entry.size}",
                    details={"path": name},
                )
            if name not in keep:
                continue
            meter.begin_file(name)
            spec = FileSpec(name, entry.size, entry.blob, entry.sha256)
            have = existing_blob(repo_dir, spec)
            if have is None:
                fh = tar.extractfile(member)
                assert fh is not None
                have = _stream(fh, BlobSink(repo_dir, spec, on_bytes=meter.add, stop=should_stop))
            else:
                meter.add(entry.size)
            placed[name] = have
            meter.end_file()
    missing = sorted(keep - set(placed))
    if missing:
        raise VerificationFailed(
            f"{path}: the bundle lacks {', '.join(missing[:5])}", details={"missing": missing}
        )
    files = tuple(placed[p] for p in sorted(placed))
    return Fetched(manifest.repo, manifest.revision, manifest.commit, files, "bundle")


def _stream(fh: IO[bytes], sink: BlobSink) -> PlacedFile:
    with sink:
        # A resumed sink already holds a verified-so-far prefix; start over for a bundle (it is local).
        sink.restart()
        while chunk := fh.read(READ_CHUNK):
            sink.write(chunk)
        return sink.finish()
