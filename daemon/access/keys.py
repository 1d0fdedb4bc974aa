"""API keys, stored hashed in DuckDB (``<state_dir>/keys.duckdb``).

A key reads ``hfd-<id>-<secret>``: ``id`` is 8 hex characters, shown by ``hfd keys list``;
``secret`` is 32 random bytes (urlsafe base64). Only the SHA-256 of the whole key is stored: a
key has 256 bits of entropy, so a fast hash is as safe as a slow one, and a lookup costs one
hash. The key itself is printed once, at creation.

Sharing the file between the daemon and the ``hfd keys`` command: DuckDB lets one process
open a database for writing, and no reader at the same time. So nobody holds it open: every
access opens, works and closes under an advisory lock (``keys.lock``), and each write bumps a
version file (``keys.version``) with an atomic rename. The daemon keeps the keys in memory and
re-reads them when that file changed (one ``stat`` per request), so a created or revoked key
counts from the next request on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from hfd._atomic_files import atomic_write_text
from hfd.client.errors import InvalidRequest, KeyStoreError, NotFound
from hfd.daemon.access.locked_db import locked_duckdb

log = logging.getLogger(__name__)

# One thread: these are tiny writes, and the cores belong to the model engines.
KEY_PREFIX = "hfd-"
SCOPE_INFERENCE = "inference"
SCOPE_MODELS = "models"
SCOPE_ADMIN = "admin"
ALL_SCOPES = frozenset({SCOPE_INFERENCE, SCOPE_MODELS, SCOPE_ADMIN})
DEFAULT_SCOPES = (SCOPE_INFERENCE,)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id          VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    key_hash    VARCHAR NOT NULL UNIQUE,
    scopes      VARCHAR[] NOT NULL,
    models      VARCHAR[],
    rpm         INTEGER NOT NULL DEFAULT 0,
    tpm         INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
)
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: every model
    rpm: int  # requests per minute; 0: unlimited
    tpm: int  # tokens per minute; 0: unlimited
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "models": None if self.models is None else sorted(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """(id, full key)."""
    key_id = secrets.token_hex(4)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return key_id, f"{KEY_PREFIX}{key_id}-{secret}"


def parse_scopes(scopes: Sequence[str] | str | None) -> frozenset[str]:
    if scopes is None:
        return frozenset(DEFAULT_SCOPES)
    items = [s.strip() for s in (scopes.split(",") if isinstance(scopes, str) else scopes) if s.strip()]
    unknown = set(items) - ALL_SCOPES
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(ALL_SCOPES))}",
            param="scopes",
        )
    if not items:
        raise InvalidRequest("a key needs at least one scope", param="scopes")
    return frozenset(items)


class KeyStore:
    """The key database of one state directory. Thread-safe; safe across processes."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "keys.duckdb"
        self._lock_path = state_dir / "keys.lock"
        self._version_path = state_dir / "keys.version"
        self._mutex = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded = False

    # ------------------------------------------------------------------ file access

    def _connect(self, *, write: bool) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return locked_duckdb(
            self.path,
            self._lock_path,
            write=write,
            schema=_SCHEMA,
            what="the key database",
            error=KeyStoreError,
        )

    def _bump_version(self) -> None:
        atomic_write_text(self._version_path, f"{time.time_ns()}\n")
        self._match_owner()

    def _match_owner(self) -> None:
        """Keep the database private to the daemon's user and group; and ``sudo hfd keys``
        must leave files the (non-root) daemon user can read."""
        try:
            os.chmod(self.path, 0o640)
        except OSError:
            pass
        if os.geteuid() != 0:
            return
        st = self.path.parent.stat()
        for path in (self.path, self._lock_path, self._version_path):
            try:
                os.chown(path, st.st_uid, st.st_gid)
            except OSError:
                pass

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self._version_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    # ------------------------------------------------------------------ writes (the CLI)

    def create(
        self,
        name: str,
        *,
        scopes: Sequence[str] | str | None = None,
        models: Sequence[str] | None = None,
        rpm: int = 0,
        tpm: int = 0,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns it and the secret key text (shown once, never stored)."""
        name = name.strip()
        if not name:
            raise InvalidRequest("a key needs a name", param="name")
        if rpm < 0 or tpm < 0:
            raise InvalidRequest("rate limits must not be negative", param="rpm" if rpm < 0 else "tpm")
        scope_set = parse_scopes(scopes)
        model_set = None if models is None else frozenset(m.strip() for m in models if m.strip())
        if model_set is not None and not model_set:
            raise InvalidRequest("--models names no model", param="models")
        key_id, key = new_key()
        now = time.time()
        with self._connect(write=True) as con:
            clash = con.execute(
                "SELECT id FROM api_keys WHERE name = ? AND revoked_at IS NULL", [name]
            ).fetchone()
            if clash:
                raise InvalidRequest(f"an active key named {name!r} exists (id {clash[0]})", param="name")
            con.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, to_timestamp(?), NULL)",
                [
                    key_id,
                    name,
                    hash_key(key),
                    sorted(scope_set),
                    None if model_set is None else sorted(model_set),
                    rpm,
                    tpm,
                    now,
                ],
            )
        self._bump_version()
        log.info("api key created", extra={"key_id": key_id, "key_name": name})
        return ApiKey(key_id, name, scope_set, model_set, rpm, tpm, now), key

    def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the active key with this name or id."""
        with self._connect(write=True) as con:
            rows = con.execute(
                "SELECT id FROM api_keys WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                [name_or_id, name_or_id],
            ).fetchall()
            if not rows:
                raise NotFound(f"no active key named or with id {name_or_id!r}")
            if len(rows) > 1:
                raise InvalidRequest(f"{name_or_id!r} matches several keys; give the id")
            con.execute("UPDATE api_keys SET revoked_at = now() WHERE id = ?", [rows[0][0]])
            key = _row_to_key(
                con.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", [rows[0][0]]).fetchone()
            )
        self._bump_version()
        log.info("api key revoked", extra={"key_id": key.id, "key_name": key.name})
        return key

    # ------------------------------------------------------------------ reads

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        try:
            with self._connect(write=False) as con:
                rows = con.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at").fetchall()
        except FileNotFoundError:
            return []
        keys = [_row_to_key(r) for r in rows]
        return keys if include_revoked else [k for k in keys if k.active]

    def changed(self) -> bool:
        """Whether the keys changed since they were last loaded (one stat)."""
        return not self._loaded or self._read_stamp() != self._stamp

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the keys when another process changed them."""
        with self._mutex:
            stamp = self._read_stamp()
            if self._loaded and not force and stamp == self._stamp:
                return
            try:
                with self._connect(write=False) as con:
                    rows = con.execute(
                        f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE revoked_at IS NULL"
                    ).fetchall()
            except FileNotFoundError:
                rows = []
            self._by_hash = {r[-1]: _row_to_key(r[:-1]) for r in rows}
            self._stamp = stamp
            self._loaded = True
            log.debug("api keys loaded", extra={"count": len(self._by_hash)})

    def lookup(self, key: str) -> ApiKey | None:
        """The active key with this text, or None. Call :meth:`refresh` first when changed."""
        if not key.startswith(KEY_PREFIX):
            return None
        return self._by_hash.get(hash_key(key))

    def active_count(self) -> int:
        return len(self._by_hash)


_COLUMNS = "id, name, scopes, models, rpm, tpm, epoch(created_at), epoch(revoked_at)"


def _row_to_key(row: Any) -> ApiKey:
    key_id, name, scopes, models, rpm, tpm, created, revoked = row
    return ApiKey(
        id=key_id,
        name=name,
        scopes=frozenset(scopes),
        models=None if models is None else frozenset(models),
        rpm=int(rpm),
        tpm=int(tpm),
        created_at=float(created),
        revoked_at=None if revoked is None else float(revoked),
    )
