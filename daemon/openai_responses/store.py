"""Stored responses: one JSON file per response under ``<state_dir>/responses/``, so that
``previous_response_id``, ``GET`` and ``DELETE /v1/responses/{id}`` survive a restart.

A record holds the response object, this request's input items, and the whole conversation up
to and including them (what a later request chaining on it continues from). Writes are atomic:
a temporary file in the same directory, flushed to disk, then renamed over the name, so a crash
mid-write leaves no partial record (only a temporary file, ``hfd._atomic_files.tmp_name``'s, removed
by the next prune). Records are the daemon's user's alone (mode 0600).
Retention is bounded: records older than ``max_age`` seconds are gone (not served, and deleted at
the next write), and beyond ``max_count`` the oldest go first. Calls block (file I/O): the route
runs them off the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hfd._atomic_files import atomic_write_bytes, is_tmp_name

_ID = re.compile(r"resp_[0-9a-f]{32}")
_SUFFIX = ".json"
# A temporary file this old is a crashed write's leftover (a write takes milliseconds).
_STALE_TMP_SECONDS = 60.0


class ResponseStore:
    def __init__(
        self, root: Path, *, max_age: float, max_count: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = root
        self.max_age = max_age
        self.max_count = max_count
        self.clock = clock

    def _path(self, rid: str) -> Path | None:
        # Ids come from clients: only our own shape names a file (no path tricks).
        return self.root / (rid + _SUFFIX) if _ID.fullmatch(rid) else None

    def _expired(self, mtime: float) -> bool:
        return self.max_age > 0 and self.clock() - mtime > self.max_age

    def put(self, rid: str, record: dict[str, Any]) -> None:
        path = self._path(rid)
        if path is None:
            raise ValueError(f"not a response id: {rid!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
        atomic_write_bytes(path, data, mode=0o600)  # conversations: the daemon's user only
        self.prune()

    def get(self, rid: str) -> dict[str, Any] | None:
        path = self._path(rid)
        if path is None:
            return None
        try:
            if self._expired(path.stat().st_mtime):
                return None
            record: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return record

    def delete(self, rid: str) -> bool:
        path = self._path(rid)
        if path is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def prune(self) -> None:
        """Remove expired records, the oldest beyond ``max_count``, and stale temporary files."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        now = self.clock()
        kept: list[tuple[float, str]] = []
        for entry in entries:
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if is_tmp_name(entry.name):
                if now - mtime > _STALE_TMP_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
            elif entry.name.endswith(_SUFFIX) and _ID.fullmatch(entry.name[: -len(_SUFFIX)]):
                if self._expired(mtime):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                else:
                    kept.append((mtime, entry.path))
        if self.max_count > 0 and len(kept) > self.max_count:
            kept.sort()
            for _, path in kept[: len(kept) - self.max_count]:
                with contextlib.suppress(OSError):
                    os.unlink(path)
