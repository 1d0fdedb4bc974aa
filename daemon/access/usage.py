"""The usage log: one row per request (time, key, model, route, tokens, latency, status) in
DuckDB (``<state_dir>/usage.duckdb``), written off the request path.

A request only appends a record to a bounded in-memory queue (no I/O, no waiting); a
background thread writes the queue out in one statement every ``flush_records`` records or
``flush_seconds`` seconds, and once more on close. When the queue is full (the disk stalled),
new records are dropped and counted rather than slowing requests down.

As with the key database, the file is opened only while writing or reading, under an advisory
lock (``usage.lock``), so ``hfd stats`` can read it while the daemon runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path
from typing import Any

import duckdb

from hfd.client.errors import InvalidRequest
from hfd.client.errors import UsageLogError as UsageError
from hfd.daemon.access.locked_db import locked_duckdb

log = logging.getLogger(__name__)

# One thread: these are tiny writes, and the cores belong to the model engines.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    ts                TIMESTAMPTZ NOT NULL,
    request_id        VARCHAR,
    door              VARCHAR,
    key               VARCHAR,
    model             VARCHAR,
    route             VARCHAR,
    status            INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        DOUBLE
)
"""


@dataclass(frozen=True)
class UsageRecord:
    ts: float  # unix seconds
    request_id: str
    door: str  # "http" | "ipc"
    key: str  # the principal: a key name, "uid:1000", "curve:<key>", "anonymous"
    model: str
    route: str  # HTTP path or IPC operation
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


_COLUMNS = [f.name for f in fields(UsageRecord)]


def _open(state_dir: Path, *, write: bool) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    return locked_duckdb(
        state_dir / "usage.duckdb",
        state_dir / "usage.lock",
        write=write,
        schema=_SCHEMA,
        what="the usage log",
        error=UsageError,
    )


class UsageLog:
    def __init__(
        self,
        state_dir: Path,
        *,
        flush_records: int = 512,
        flush_seconds: float = 5.0,
        max_queue: int = 65536,
        retention_days: float = 0.0,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.flush_records = max(1, flush_records)
        self.flush_seconds = flush_seconds
        self.max_queue = max(1, max_queue)
        self.retention_days = retention_days
        self.dropped = 0
        self.written = 0
        self._on_drop = on_drop
        self._queue: deque[UsageRecord] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._pruned_at = 0.0

    def start(self) -> None:
        if self._thread is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="hfd-usage", daemon=True)
        self._thread.start()

    def record(self, rec: UsageRecord) -> bool:
        """Queue a record; never blocks. False when the queue was full and it was dropped."""
        wake = False
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self.dropped += 1
                full = True
            else:
                self._queue.append(rec)
                full = False
                wake = len(self._queue) >= self.flush_records
        if full:
            if self._on_drop is not None:
                self._on_drop()
            return False
        if wake:
            self._wake.set()
        return True

    def pending(self) -> int:
        return len(self._queue)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` records, newest first: those still queued, then the log's
        (``GET /api/usage/recent``). Blocking (reads the file): call off the event loop."""
        # Under the writer's lock, so no record moves from the queue to the file meanwhile.
        with self._write_lock:
            with self._lock:
                queued = [asdict(r) for r in reversed(self._queue)][:limit]
            rows: list[tuple[Any, ...]] = []
            if len(queued) < limit and (self.state_dir / "usage.duckdb").exists():
                select = ", ".join("epoch(ts)" if c == "ts" else c for c in _COLUMNS)
                with _open(self.state_dir, write=False) as con:
                    sql = f"SELECT {select} FROM usage ORDER BY ts DESC LIMIT ?"
                    rows = con.execute(sql, [limit - len(queued)]).fetchall()
        return queued + [dict(zip(_COLUMNS, row, strict=True)) for row in rows]

    def flush(self) -> int:
        """Write what is queued now; returns the number of records written."""
        with self._write_lock:
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
            if not batch:
                return 0
            try:
                self._write(batch)
            except Exception:
                # Requeue at the front (within the bound) so a passing lock/disk problem loses nothing.
                with self._lock:
                    room = self.max_queue - len(self._queue)
                    keep = batch[-room:] if room > 0 else []
                    self._queue.extendleft(reversed(keep))
                    self.dropped += len(batch) - len(keep)
                raise
            self.written += len(batch)
            return len(batch)

    def close(self) -> None:
        """Stop the writer and write everything still queued."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("usage log: final flush failed", extra={"pending": self.pending()})

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
                self._maybe_prune()
            except Exception:
                log.exception("usage log: flush failed", extra={"pending": self.pending()})
                # Back off so a broken disk does not spin this thread.
                self._closing.wait(min(self.flush_seconds, 5.0))

    def _write(self, batch: list[UsageRecord]) -> None:
        columns = [list(col) for col in zip(*(astuple(r) for r in batch), strict=True)]
        # One statement for the whole batch: unnest() of column lists is ~40x faster than
        # executemany() in DuckDB.
        select = ", ".join(
            f"to_timestamp(unnest(${i + 1}))" if name == "ts" else f"unnest(${i + 1})"
            for i, name in enumerate(_COLUMNS)
        )
        with _open(self.state_dir, write=True) as con:
            con.execute(f"INSERT INTO usage ({', '.join(_COLUMNS)}) SELECT {select}", columns)

    def _maybe_prune(self) -> None:
        if self.retention_days <= 0 or time.time() - self._pruned_at < 86400:
            return
        self._pruned_at = time.time()
        if not (self.state_dir / "usage.duckdb").exists():
            return
        with _open(self.state_dir, write=True) as con:
            con.execute(
                "DELETE FROM usage WHERE ts < now() - to_seconds(?)", [float(self.retention_days * 86400)]
            )


# ----------------------------------------------------------------------------- reading

GROUPINGS = {
    "model": "model",
    "key": "key",
    "day": "strftime(date_trunc('day', ts), '%Y-%m-%d')",
    "route": "route",
    "status": "CAST(status AS VARCHAR)",
}


def parse_since(text: str | None, *, now: float | None = None) -> float | None:
    """``7d``, ``12h``, ``30m``, ``90s`` (ago), or an ISO date/time, as unix seconds."""
    if not text:
        return None
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip()
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"--since {text!r}: give a duration like 7d/12h/30m or an ISO date", param="since"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def summarize(state_dir: Path, *, by: str = "model", since: float | None = None) -> list[dict[str, Any]]:
    """Totals per group: requests, errors, tokens in/out, mean and p95 latency."""
    if by not in GROUPINGS:
        raise InvalidRequest(f"--by must be one of {', '.join(GROUPINGS)}", param="by")
    group = GROUPINGS[by]
    where = "WHERE ts >= to_timestamp(?)" if since is not None else ""
    sql = f"""
        SELECT {group} AS grp,
               count(*) AS requests,
               count(*) FILTER (WHERE status >= 400) AS errors,
               coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(completion_tokens), 0) AS completion_tokens,
               avg(latency_ms) AS mean_ms,
               quantile_cont(latency_ms, 0.95) AS p95_ms
        FROM usage {where}
        GROUP BY grp ORDER BY requests DESC, grp
    """
    try:
        with _open(state_dir, write=False) as con:
            rows = con.execute(sql, [since] if since is not None else []).fetchall()
    except FileNotFoundError:
        return []
    names = ["group", "requests", "errors", "prompt_tokens", "completion_tokens", "mean_ms", "p95_ms"]
    return [dict(zip(names, row, strict=True)) for row in rows]
