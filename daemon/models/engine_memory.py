"""Engines known not to serve a model on this machine, and why: remembered across restarts.

When an engine dies natively while loading or warming up a model (``EngineCrashed``), or its
engine process dies again and again at its first requests, the model manager falls back to the
next engine in the policy's order and writes a record here. The next load of the same model
skips that engine at once, with the remembered reason, instead of crashing it again.

A record is keyed by what the failure depends on: the model's files (path, sizes, modification
times), the engine and its version, the device, the CPU (model name and vector extensions), the
thread count and the precision asked for. Change any of them (new weights, an upgraded engine,
another machine sharing the state dir, other threads or ``dtype``) and the engine is tried
again. The records live in ``<state_dir>/engine-failures.json``; deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from hfd._atomic_files import atomic_write_text
from hfd.backends.exports import dist_version
from hfd.backends.formats import file_stats

log = logging.getLogger(__name__)

FILE_NAME = "engine-failures.json"
# An engine process that dies this many times before finishing this many requests is treated
# like one that cannot load the model.
EARLY_DEATHS = 2
EARLY_REQUESTS = 3


def engine_version(engine: str) -> str:
    """The installed version of the engine's distribution ("none" when it is not installed)."""
    from hfd.backends import registry

    record = registry.ENGINES.get(engine)
    dist = engine if record is None else record.dist
    return "none" if dist is None else dist_version(dist)


def machine() -> dict[str, Any]:
    """The CPU a record holds for: model name, architecture, vector extensions."""
    from hfd.backends import hardware

    cpu = hardware.probe_cpu()
    return {"cpu": cpu.model, "arch": cpu.arch, "features": list(cpu.features)}


def record_key(
    path: Path,
    engine: str,
    device: str,
    threads: int,
    dtype: str | None,
    cpu: dict[str, Any] | None = None,
) -> str:
    data = {
        "model": {"path": str(path.resolve()), "files": file_stats(path)},
        "engine": engine,
        "version": engine_version(engine),
        "device": device.lower(),
        "threads": threads,
        "dtype": dtype or "default",
        "machine": cpu if cpu is not None else machine(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


class EngineMemory:
    """The records file, read once and rewritten (atomically) on every change."""

    def __init__(self, state_dir: Path | None, file_name: str = FILE_NAME) -> None:
        # Another file name: the same records file for another kind of record (the measured
        # engine order, ``engine_choice``).
        self.path = state_dir / file_name if state_dir is not None else None
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] | None = None

    def _all(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            records: dict[str, dict[str, Any]] = {}
            if self.path is not None:
                try:
                    loaded = json.loads(self.path.read_text())
                    if isinstance(loaded, dict):
                        records = {k: v for k, v in loaded.items() if isinstance(v, dict)}
                except FileNotFoundError:
                    pass
                except (OSError, ValueError) as exc:
                    log.warning(
                        "engine records unreadable; starting afresh",
                        extra={"path": str(self.path), "error": repr(exc)},
                    )
            self._records = records
        return self._records

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._all().get(key)

    def remember(self, key: str, *, model: str, engine: str, device: str, reason: str, **more: Any) -> None:
        record = {"model": model, "engine": engine, "device": device, "reason": reason,
                  "at": round(time.time(), 3), **machine(), **more}  # fmt: skip
        self.put(key, record)
        log.warning(
            "engine cannot serve this model here; remembered",
            extra={"model": model, "engine": engine, "reason": reason},
        )

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` under ``key`` and rewrite the file."""
        with self._lock:
            self._all()[key] = record
            self._write()

    def forget(self, key: str) -> None:
        with self._lock:
            if self._all().pop(key, None) is not None:
                self._write()

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(v) for v in self._all().values()]

    def _write(self) -> None:
        if self.path is None:
            return
        try:
            # A temporary name of its own: another process (a pull's measurement) may write too.
            atomic_write_text(self.path, json.dumps(self._all(), indent=1, sort_keys=True))
        except OSError as exc:  # the records only save time; never fail a load over them
            log.warning("cannot write engine records", extra={"path": str(self.path), "error": repr(exc)})
