"""The response cache: repeated deterministic requests answered without touching a model.

What is cached: embeddings (always deterministic) and generations at temperature 0 or with a
fixed seed that ended normally ("stop" or "length"). A request sends ``cache: false`` to bypass.

The key is the SHA-256 of canonical JSON (sorted keys, no spaces) of:

- the model snapshot's identity (``snapshot_identity``: its path, the size and mtime of every
  file in it, the engine, the device and the load options that change results), so a changed
  file or another engine never serves a stale answer;
- the request kind and the parsed request minus the fields that do not change the result
  (``model``, which the identity replaces, ``stream``, ``stream_options``, ``user``,
  ``keep_alive``, ``cache``, ``encoding_format``).

A streamed and a plain request share entries: a generation is stored as its chunks, which are
replayed one by one for a stream (``cache_streams``). Values are msgpack, never pickle.

Bounded in bytes (LRU) with a TTL. With ``persist``, entries are also written to
``<cache_dir>/responses/<key[:2]>/<key>`` (atomic rename, a BLAKE2 checksum that a torn or
foreign file fails) and read back after a restart; memory never holds more than ``max_bytes``.
Files, not a database: each entry is written once and read whole, and a crash can at worst
lose entries, never corrupt others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgpack
import numpy as np
from pydantic import BaseModel

from hfd._atomic_files import atomic_file, is_tmp_name
from hfd.backends.formats import file_stats
from hfd.daemon.scheduler.generation import TokenChunk
from hfd.daemon.settings import SettingsError

log = logging.getLogger(__name__)

KEY_VERSION = 1
# Request fields that do not change what the model computes.
IGNORED_FIELDS = frozenset(
    {"model", "stream", "stream_options", "user", "keep_alive", "cache", "encoding_format"}
)
# LoadOptions.extra entries that change results (others, like thread counts, do not).
RESULT_OPTIONS = ("dtype", "weight_format", "quantization")

_MAGIC = b"HFDC1"
_HEADER = struct.Struct("<5sdI")  # magic, created (unix time), value length
_DIGEST = 32


def request_key(kind: str, identity: str, request: BaseModel) -> str:
    body = request.model_dump(mode="json", exclude=set(IGNORED_FIELDS))
    canonical = json.dumps(
        {"v": KEY_VERSION, "kind": kind, "model": identity, "request": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def snapshot_identity(path: Path, *, engine: str, device: str, options: dict[str, Any] | None = None) -> str:
    """A digest of what makes a model compute what it computes. Files are found by walking the
    snapshot (symlinks followed, as in the Hugging Face cache layout); hidden folders skipped."""
    files = file_stats(path)
    relevant = {k: (options or {}).get(k) for k in RESULT_OPTIONS if (options or {}).get(k) is not None}
    data = json.dumps(
        {
            "path": str(path.resolve()),
            "files": files,
            "engine": engine,
            "device": device,
            "options": relevant,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def generation_cacheable(temperature: float | None, seed: int | None) -> bool:
    """Greedy decoding, or sampling from a fixed seed. A missing temperature means OpenAI's
    default of 1.0, which is random unless seeded."""
    return (temperature is not None and temperature <= 0.0) or seed is not None


# ----------------------------------------------------------------------------- values


def encode_embedding(vectors: np.ndarray, prompt_tokens: int) -> bytes:
    v = np.ascontiguousarray(vectors, dtype="<f4")
    return msgpack.packb(
        {"k": "embed", "shape": list(v.shape), "data": v.tobytes(), "prompt_tokens": prompt_tokens}
    )


def decode_embedding(value: bytes) -> tuple[np.ndarray, int]:
    data = msgpack.unpackb(value)
    vectors = np.frombuffer(data["data"], dtype="<f4").reshape(data["shape"]).astype(np.float32)
    return vectors, int(data["prompt_tokens"])


def encode_generation(chunks: Iterable[TokenChunk], prompt_tokens: int) -> bytes:
    return msgpack.packb(
        {
            "k": "gen",
            "chunks": [[c.text, list(c.token_ids), c.finish_reason] for c in chunks],
            "prompt_tokens": prompt_tokens,
        }
    )


def decode_generation(value: bytes) -> tuple[list[TokenChunk], int]:
    data = msgpack.unpackb(value)
    chunks = [TokenChunk(str(t), [int(i) for i in ids], f) for t, ids, f in data["chunks"]]
    return chunks, int(data["prompt_tokens"])


# ----------------------------------------------------------------------------- store


@dataclass
class _Entry:
    size: int
    created: float
    value: bytes | None  # None: only on disk


class ResponseCache:
    """Thread-safe; ``get``/``put`` may touch the disk when persisting, so async callers use
    ``aget``/``aput``, which keep disk reads and writes off the event loop."""

    def __init__(
        self,
        *,
        max_bytes: int,
        ttl: float,
        directory: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 0:
            raise SettingsError("cache_max_bytes must not be negative")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.directory = directory
        self._clock = clock  # wall time: entries outlive the process when persisted
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._memory_bytes = 0
        self.hits = self.misses = self.evictions = self.expired = self.stores = 0
        if directory is not None:
            self._load_index(directory)

    @classmethod
    def from_settings(cls, settings: Any, clock: Callable[[], float] = time.time) -> ResponseCache | None:
        if not settings.cache_enabled or settings.cache_max_bytes <= 0:
            return None
        directory = Path(settings.cache_dir) / "responses" if settings.cache_persist else None
        return cls(
            max_bytes=settings.cache_max_bytes, ttl=settings.cache_ttl, directory=directory, clock=clock
        )

    # ----------------------------------------------------------------- public

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if self._stale(entry):
                self._drop(key)
                self.expired += 1
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            value = entry.value
        if value is None:
            value = self._read(key)
            with self._lock:
                current = self._entries.get(key)
                if value is None:
                    if current is entry:
                        self._drop(key)
                    self.misses += 1
                    return None
                if current is entry and entry.value is None:
                    # Every entry counts against max_bytes, so the memory tier stays within it.
                    entry.value = value
                    self._memory_bytes += entry.size
        with self._lock:
            self.hits += 1
        return value

    def put(self, key: str, value: bytes) -> bool:
        """Store a value; False when it is larger than the whole cache."""
        size = len(value)
        if size > self.max_bytes:
            return False
        created = self._clock()
        if self.directory is not None:
            self._write(key, created, value)
        with self._lock:
            if key in self._entries:
                self._drop(key, unlink=False)
            self._entries[key] = _Entry(size=size, created=created, value=value)
            self._bytes += size
            self._memory_bytes += size
            self.stores += 1
            self._evict()
        return True

    async def aget(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            in_memory = entry is not None and entry.value is not None
        if in_memory or self.directory is None:
            return self.get(key)
        return await anyio.to_thread.run_sync(self.get, key)

    async def aput(self, key: str, value: bytes) -> bool:
        if self.directory is None:
            return self.put(key, value)
        return await anyio.to_thread.run_sync(self.put, key, value)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "memory_bytes": self._memory_bytes,
                "max_bytes": self.max_bytes,
                "ttl": self.ttl,
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
                "stores": self.stores,
                "evictions": self.evictions,
                "expired": self.expired,
                "persist": str(self.directory) if self.directory is not None else None,
            }

    def __contains__(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and not self._stale(entry)

    # ----------------------------------------------------------------- bookkeeping (lock held)

    def _stale(self, entry: _Entry) -> bool:
        return self.ttl > 0 and self._clock() - entry.created >= self.ttl

    def _drop(self, key: str, *, unlink: bool = True) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        if entry.value is not None:
            self._memory_bytes -= entry.size
        if unlink and self.directory is not None:
            with contextlib.suppress(OSError):
                self._path(key).unlink()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            key = next(iter(self._entries))
            self._drop(key)
            self.evictions += 1

    # ----------------------------------------------------------------- disk

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def _write(self, key: str, created: float, value: bytes) -> None:
        path = self._path(key)
        digest = hashlib.blake2b(key.encode() + value, digest_size=_DIGEST).digest()
        try:
            # No disk flush: an entry carries its own digest, and one lost to a power cut is a miss.
            with atomic_file(path, durable=False, mode=0o600) as fh:  # replies: the daemon's own
                fh.write(_HEADER.pack(_MAGIC, created, len(value)))
                fh.write(value)
                fh.write(digest)
        except OSError as exc:
            # A full or read-only disk costs the persistence, not the request.
            log.warning("cannot persist a cached response", extra={"path": str(path), "error": str(exc)})

    def _read_file(self, path: Path, key: str) -> tuple[float, bytes] | None:
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if len(raw) < _HEADER.size + _DIGEST:
            return None
        magic, created, length = _HEADER.unpack_from(raw)
        value = raw[_HEADER.size : _HEADER.size + length]
        digest = raw[_HEADER.size + length :]
        if magic != _MAGIC or len(value) != length:
            return None
        if hashlib.blake2b(key.encode() + value, digest_size=_DIGEST).digest() != digest:
            return None
        return created, value

    def _read(self, key: str) -> bytes | None:
        found = self._read_file(self._path(key), key)
        if found is None:
            log.warning("dropping an unreadable cached response", extra={"key": key})
            return None
        return found[1]

    def _load_index(self, directory: Path) -> None:
        """After a restart: list what is on disk (values stay there until asked for)."""
        found: list[tuple[float, str, int]] = []
        for path in directory.glob("??/*"):
            if is_tmp_name(path.name):
                with contextlib.suppress(OSError):
                    path.unlink()  # a write interrupted by a crash
                continue
            try:
                with path.open("rb") as fh:
                    head = fh.read(_HEADER.size)
                size = path.stat().st_size
            except OSError:
                continue
            if len(head) != _HEADER.size:
                continue
            magic, created, length = _HEADER.unpack(head)
            if magic != _MAGIC or size != _HEADER.size + length + _DIGEST:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.append((created, path.name, length))
        for created, key, length in sorted(found):  # oldest first: the LRU end
            entry = _Entry(size=length, created=created, value=None)
            if self._stale(entry):
                with contextlib.suppress(OSError):
                    self._path(key).unlink()
                continue
            self._entries[key] = entry
            self._bytes += length
        self._evict()
        if self._entries:
            log.info("response cache loaded", extra={"entries": len(self._entries), "bytes": self._bytes})
