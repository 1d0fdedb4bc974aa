"""The DuckDB catalog: what the store holds, where each file came from, and when it was used.

DuckDB lets one process at a time open a database file for writing, and a process that holds
it open blocks every other process, readers included. So nobody keeps the catalog open: every
operation opens it, runs one transaction and closes it again (about 20 ms), and an open that
finds the file locked by another process (the daemon and a CLI command at the same moment)
retries with back-off for ``LOCK_WAIT`` seconds. The daemon and ``hfd`` commands therefore
share the catalog without talking to each other.

The files on disk are the truth; the catalog is an index of them with provenance and digests.
A snapshot on disk without rows (a crash between placing it and recording it) is still found
and served, and its rows are rebuilt the next time it is pulled or shown.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb

from hfd.client.errors import InternalError
from hfd.daemon.store.writer import PlacedFile

log = logging.getLogger(__name__)

LOCK_WAIT: Final = 15.0
SCHEMA_VERSION: Final = 2  # 2: blob_checks (verification times, quarantine marks)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS snapshots (
    repo VARCHAR NOT NULL,
    commit VARCHAR NOT NULL,
    revision VARCHAR,
    source VARCHAR NOT NULL,
    cid VARCHAR,
    task VARCHAR,
    file_count INTEGER NOT NULL,
    total_size BIGINT NOT NULL,
    allow_pickle BOOLEAN NOT NULL DEFAULT false,
    pulled_at TIMESTAMP NOT NULL,
    last_used TIMESTAMP,
    PRIMARY KEY (repo, commit)
);
CREATE TABLE IF NOT EXISTS files (
    repo VARCHAR NOT NULL,
    commit VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    blob VARCHAR NOT NULL,
    cid VARCHAR,
    PRIMARY KEY (repo, commit, path)
);
CREATE TABLE IF NOT EXISTS blob_checks (
    repo VARCHAR NOT NULL,
    blob VARCHAR NOT NULL,
    size BIGINT,
    mtime_ns BIGINT,
    ctime_ns BIGINT,
    inode BIGINT,
    verified_at TIMESTAMP,
    quarantined_at TIMESTAMP,
    problem VARCHAR,
    PRIMARY KEY (repo, blob)
);
CREATE TABLE IF NOT EXISTS published (
    cid VARCHAR PRIMARY KEY,
    repo VARCHAR NOT NULL,
    revision VARCHAR,
    commit VARCHAR NOT NULL,
    cid_version INTEGER NOT NULL,
    raw_leaves BOOLEAN NOT NULL,
    chunker VARCHAR NOT NULL,
    hash VARCHAR NOT NULL,
    published_at TIMESTAMP NOT NULL
);
"""

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class SnapshotRow:
    repo: str
    commit: str
    revision: str | None
    source: str
    cid: str | None
    task: str | None
    file_count: int
    total_size: int
    allow_pickle: bool
    pulled_at: datetime
    last_used: datetime | None


@dataclass(frozen=True)
class BlobCheck:
    """When a blob was last hashed and found good, and what its file looked like then; or
    when it was quarantined and why."""

    repo: str
    blob: str
    size: int | None
    mtime_ns: int | None
    ctime_ns: int | None
    inode: int | None
    verified_at: datetime | None
    quarantined_at: datetime | None
    problem: str | None

    def matches(self, stat: tuple[int, int, int, int]) -> bool:
        """The file is the one that was verified: same size, mtime, ctime and inode."""
        return self.verified_at is not None and (self.size, self.mtime_ns, self.ctime_ns, self.inode) == stat


@dataclass(frozen=True)
class PublishedRow:
    cid: str
    repo: str
    revision: str | None
    commit: str
    cid_version: int
    raw_leaves: bool
    chunker: str
    hash: str
    published_at: datetime


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Connections of one process to one file share a database instance; the lock keeps
        # this process's threads from interleaving transactions.
        self._lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.02
        while True:
            try:
                conn = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise InternalError(f"cannot open the catalog {self.path}: {exc}") from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        try:
            if not self._ready:
                conn.execute(_SCHEMA)
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
                )
                self._ready = True
            yield conn
        finally:
            conn.close()

    def _run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # ------------------------------------------------------------------ snapshots

    def record_snapshot(
        self,
        *,
        repo: str,
        commit: str,
        revision: str | None,
        source: str,
        files: Iterable[PlacedFile],
        cid: str | None = None,
        task: str | None = None,
        allow_pickle: bool = False,
    ) -> None:
        """Record a snapshot and its files, replacing what was recorded for that commit."""
        files = list(files)

        def op(conn: duckdb.DuckDBPyConnection) -> None:
            old = conn.execute(
                "SELECT cid, pulled_at, last_used FROM snapshots WHERE repo = ? AND commit = ?",
                [repo, commit],
            ).fetchone()
            old_cids = dict(
                conn.execute(
                    "SELECT path, cid FROM files WHERE repo = ? AND commit = ? AND cid IS NOT NULL",
                    [repo, commit],
                ).fetchall()
            )
            conn.execute("DELETE FROM files WHERE repo = ? AND commit = ?", [repo, commit])
            conn.execute("DELETE FROM snapshots WHERE repo = ? AND commit = ?", [repo, commit])
            conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    repo,
                    commit,
                    revision,
                    source,
                    cid or (old[0] if old else None),
                    task,
                    len(files),
                    sum(f.size for f in files),
                    allow_pickle,
                    utcnow(),
                    old[2] if old else None,
                ],
            )
            if files:
                conn.executemany(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        [repo, commit, f.path, f.size, f.sha256, f.blob, f.cid or old_cids.get(f.path)]
                        for f in files
                    ],
                )

        self._run(op)

    def set_cids(self, repo: str, commit: str, root: str, files: dict[str, str]) -> None:
        def op(conn: duckdb.DuckDBPyConnection) -> None:
            conn.execute("UPDATE snapshots SET cid = ? WHERE repo = ? AND commit = ?", [root, repo, commit])
            conn.executemany(
                "UPDATE files SET cid = ? WHERE repo = ? AND commit = ? AND path = ?",
                [[cid, repo, commit, path] for path, cid in files.items()],
            )

        self._run(op)

    def snapshot(self, repo: str, commit: str) -> SnapshotRow | None:
        rows = self._run(
            lambda c: c.execute(
                "SELECT * FROM snapshots WHERE repo = ? AND commit = ?", [repo, commit]
            ).fetchall()
        )
        return SnapshotRow(*rows[0]) if rows else None

    def snapshots(self) -> list[SnapshotRow]:
        rows = self._run(lambda c: c.execute("SELECT * FROM snapshots ORDER BY repo, pulled_at").fetchall())
        return [SnapshotRow(*r) for r in rows]

    def by_cid(self, cid: str) -> SnapshotRow | None:
        rows = self._run(lambda c: c.execute("SELECT * FROM snapshots WHERE cid = ?", [cid]).fetchall())
        return SnapshotRow(*rows[0]) if rows else None

    def files(self, repo: str, commit: str) -> list[PlacedFile]:
        rows = self._run(
            lambda c: c.execute(
                "SELECT path, size, sha256, blob, cid FROM files WHERE repo = ? AND commit = ? ORDER BY path",
                [repo, commit],
            ).fetchall()
        )
        return [PlacedFile(*r) for r in rows]

    def touch(self, repo: str, commit: str, when: datetime | None = None) -> None:
        self._run(
            lambda c: c.execute(
                "UPDATE snapshots SET last_used = ? WHERE repo = ? AND commit = ?",
                [when or utcnow(), repo, commit],
            )
        )

    def forget(self, repo: str, commit: str) -> None:
        def op(conn: duckdb.DuckDBPyConnection) -> None:
            conn.execute("DELETE FROM files WHERE repo = ? AND commit = ?", [repo, commit])
            conn.execute("DELETE FROM snapshots WHERE repo = ? AND commit = ?", [repo, commit])

        self._run(op)

    # ------------------------------------------------------------------ blob verification

    def blob_checks(self, repo: str) -> dict[str, BlobCheck]:
        rows = self._run(lambda c: c.execute("SELECT * FROM blob_checks WHERE repo = ?", [repo]).fetchall())
        return {r[1]: BlobCheck(*r) for r in rows}

    def record_verified(
        self, repo: str, checks: Iterable[tuple[str, tuple[int, int, int, int]]], when: datetime | None = None
    ) -> None:
        """``(blob, (size, mtime_ns, ctime_ns, inode))`` for blobs just hashed and found good."""
        at = when or utcnow()
        rows = [[repo, blob, *stat, at, None, None] for blob, stat in checks]
        if rows:
            self._run(
                lambda c: c.executemany(
                    "INSERT OR REPLACE INTO blob_checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            )

    def record_quarantined(self, repo: str, blob: str, problem: str, when: datetime | None = None) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO blob_checks VALUES (?, ?, NULL, NULL, NULL, NULL, NULL, ?, ?)",
                [repo, blob, when or utcnow(), problem],
            )
        )

    def least_recently_verified(self, limit: int) -> list[tuple[str, str, str, int]]:
        """``(repo, blob, sha256, size)`` of recorded blobs not quarantined, never-verified first."""
        rows = self._run(
            lambda c: c.execute(
                """
                SELECT f.repo, f.blob, any_value(f.sha256), max(f.size), min(k.verified_at) AS v
                FROM files f LEFT JOIN blob_checks k ON f.repo = k.repo AND f.blob = k.blob
                WHERE k.quarantined_at IS NULL
                GROUP BY f.repo, f.blob
                ORDER BY v NULLS FIRST, f.repo, f.blob
                LIMIT ?
                """,
                [limit],
            ).fetchall()
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    def forget_checks(self, repo: str, keep: Iterable[str]) -> None:
        """Drop the rows of blobs that are gone (after ``hfd rm``)."""
        kept = list(keep)

        def op(conn: duckdb.DuckDBPyConnection) -> None:
            if kept:
                marks = ", ".join("?" for _ in kept)
                conn.execute(
                    f"DELETE FROM blob_checks WHERE repo = ? AND blob NOT IN ({marks})", [repo, *kept]
                )
            else:
                conn.execute("DELETE FROM blob_checks WHERE repo = ?", [repo])

        self._run(op)

    # ------------------------------------------------------------------ published CIDs

    def record_published(self, row: PublishedRow) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    row.cid,
                    row.repo,
                    row.revision,
                    row.commit,
                    row.cid_version,
                    row.raw_leaves,
                    row.chunker,
                    row.hash,
                    row.published_at,
                ],
            )
        )

    def published_cids(self, repo: str, revision: str) -> list[str]:
        """CIDs known for a repo at a revision (or commit), newest first."""
        rows = self._run(
            lambda c: c.execute(
                "SELECT cid FROM published WHERE repo = ? AND (revision = ? OR commit = ?) ORDER BY published_at DESC",
                [repo, revision, revision],
            ).fetchall()
        )
        return [r[0] for r in rows]

    def raw(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Read-only queries for diagnostics and tests."""
        return self._run(lambda c: c.execute(sql, params or []).fetchall())
