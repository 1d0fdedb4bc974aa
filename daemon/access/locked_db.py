"""One DuckDB file shared by the daemon and the CLI, opened under an advisory file lock.

DuckDB lets one process write a file at a time; the daemon and ``hfd keys`` / ``hfd stats``
are separate processes, so every open takes ``flock`` on a lock file beside the database first
and holds it for the connection's life. Readers open the lock file read-only: the daemon's user
may only be able to read the state directory.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from hfd.client.errors import HfdError

# One thread per connection: these files are small, and the engines own the cores.
DUCKDB_CONFIG: dict[str, str | bool | int | float | list[str]] = {"threads": 1}


@contextmanager
def locked_duckdb(
    path: Path, lock: Path, *, write: bool, schema: str, what: str, error: type[HfdError]
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``path`` held under ``lock``; ``schema`` runs first when writing. A reader
    of a database that does not exist gets ``FileNotFoundError``; one that cannot be opened,
    ``error`` naming ``what`` ("the key database")."""
    if not write and not path.exists():
        raise FileNotFoundError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            con = duckdb.connect(str(path), read_only=not write, config=DUCKDB_CONFIG)
        except duckdb.Error as exc:
            raise error(f"cannot open {what} {path}: {exc}") from exc
        try:
            if write:
                con.execute(schema)
            yield con
        finally:
            con.close()
    finally:
        os.close(fd)  # releases the lock
