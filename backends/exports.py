"""The cache of derived artifacts (OpenVINO IR, ONNX exports), keyed by the hash of their inputs.

An export lives in ``<cache_dir>/exports/<key>/`` where ``key`` is the sha256 of:

- the source's identity: the snapshot commit when it is known (a Hugging Face cache snapshot
  directory is named by its commit and never changes), else every source file's relative path,
  size and content hash (a blob named by its sha256 in the HF layout is taken at its name; other
  files are hashed; modification times play no part, so a copy of the same files hits the cache);
- the engine and its version (a new OpenVINO may read old IR, but it may also export better);
- the export options (task, weight format, exporter revision ...).

An export is built in a temporary sibling directory, gets a marker file with its metadata last,
and is renamed into place, so a crash never leaves a directory that looks complete. A lock file
per key keeps two processes from exporting the same thing at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfd._atomic_files import atomic_write_text
from hfd.client.errors import HfdError, ModelUnavailable

log = logging.getLogger(__name__)

MARKER = "hfd-export.json"
_SNAPSHOT_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")  # an LFS blob in the HF cache is named by its sha256
_HASH_CHUNK = 1 << 20

# (resolved path, size, mtime_ns) -> sha256: a daemon hashes a snapshot once per process.
_digest_memo: dict[tuple[str, int, int], str] = {}
_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Export:
    """A ready export: where it is, whether this call built it, and how long that took."""

    key: str
    path: Path
    built: bool
    seconds: float
    metadata: dict[str, Any]


def dist_version(dist: str) -> str:
    """An installed distribution's version, ``"none"`` when it is not installed: part of the
    keys of what is built from a model with it (exports, tokenizer records)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def exports_root(cache_dir: Path) -> Path:
    return cache_dir / "exports"


def _file_digest(path: Path) -> str:
    resolved = path.resolve()
    if _BLOB_NAME.match(resolved.name):
        return resolved.name
    stat = resolved.stat()
    memo_key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    cached = _digest_memo.get(memo_key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with resolved.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _digest_memo[memo_key] = digest
    return digest


def source_identity(source: Path, commit: str | None = None) -> dict[str, Any]:
    """What identifies a model's source files: its commit, or each file's path, size and hash."""
    if commit is None and _SNAPSHOT_COMMIT.match(source.name) and source.parent.name == "snapshots":
        commit = source.name
    if commit is not None:
        return {"commit": commit}
    files = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        files.append([rel.as_posix(), path.stat().st_size, _file_digest(path)])
    return {"files": files}


def export_key(
    source: Path,
    *,
    engine: str,
    engine_version: str,
    options: Mapping[str, Any],
    commit: str | None = None,
) -> str:
    """The cache key of an export: sha256 over the source identity, engine, version and options."""
    payload = {
        "source": source_identity(source, commit),
        "engine": engine,
        "engine_version": engine_version,
        "options": dict(options),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ExportCache:
    """Derived artifacts under ``<cache_dir>/exports``."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = exports_root(cache_dir)

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        """Whether a complete export exists for ``key`` (its marker is only written last)."""
        return (self.path(key) / MARKER).is_file()

    def metadata(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path(key) / MARKER).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def get_or_build(
        self,
        key: str,
        build: Callable[[Path], None],
        metadata: Mapping[str, Any] | None = None,
    ) -> Export:
        """The export for ``key``, building it with ``build(tmp_dir)`` when it is missing.

        ``build`` writes the artifacts into the directory it is given; hfd errors it raises pass
        through, anything else becomes ``ModelUnavailable``. Nothing is left behind on failure.
        """
        start = time.perf_counter()
        if self.has(key):
            return self._warm(key, start)
        with self._locked(key):
            if self.has(key):  # another thread or process built it while we waited
                return self._warm(key, start)
            return self._build(key, build, metadata or {}, start)

    def _warm(self, key: str, start: float) -> Export:
        seconds = time.perf_counter() - start
        meta = self.metadata(key) or {}
        log.info("export warm", extra={"export_key": key, "seconds": round(seconds, 4), **_summary(meta)})
        return Export(key=key, path=self.path(key), built=False, seconds=seconds, metadata=meta)

    def _build(
        self, key: str, build: Callable[[Path], None], metadata: Mapping[str, Any], start: float
    ) -> Export:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        if final.exists():  # left over without a marker (an older layout, a manual copy): rebuild
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=self.root))
        try:
            try:
                build(tmp)
            except HfdError:
                raise
            except Exception as exc:
                raise ModelUnavailable(f"export failed: {exc}", details={"export_key": key}) from exc
            seconds = time.perf_counter() - start
            meta = {**metadata, "key": key, "created": time.time(), "build_seconds": round(seconds, 3)}
            _atomic_write_json(tmp / MARKER, meta)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("export cold", extra={"export_key": key, "seconds": round(seconds, 3), **_summary(meta)})
        return Export(key=key, path=final, built=True, seconds=seconds, metadata=meta)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        with _key_locks_guard:
            thread_lock = _key_locks.setdefault(key, threading.Lock())
        with thread_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            lock_path = self.root / f".{key}.lock"
            with lock_path.open("a") as fh:
                _flock(fh.fileno())
                try:
                    yield
                finally:
                    _funlock(fh.fileno())


def _summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("engine", "task", "weight_format", "source") if k in meta}


def _atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


try:
    import fcntl

    def _flock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _funlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows: the in-process lock is what we have

    def _flock(fd: int) -> None:
        return None

    def _funlock(fd: int) -> None:
        return None
