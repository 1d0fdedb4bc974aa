"""Crash-safe file writes, for the store and every record the daemon and its engines keep (export
markers, tokenizer and engine records): a reader never sees a half-written file or link.

Everything is written to a temporary name of its own in the destination's directory (same
filesystem; two writers of one file never share it), flushed to disk, then renamed over the
destination; the directory is fsynced so the rename itself survives a power cut. Only the
standard library: the engines import this without the daemon.

Every such write in hfd goes through here (the store, the engines' records and export checks,
the key database's version stamp, the Ollama aliases, the stored Responses, the response
cache): one rule for temporary names, so the sweeps of crashed writes know them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some platforms/filesystems cannot open a directory; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TMP_SUFFIX = ".tmp"


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")


# What older releases' writers (mkstemp with this prefix) left behind in the response cache and
# the stored Responses.
_LEGACY_TMP_PREFIX = ".tmp-"


def is_tmp_name(name: str) -> bool:
    """Whether a file name is one of ``tmp_name``'s, or an older release's temporary name: what
    a crash mid-write leaves behind, for the directories that sweep them (the response cache,
    the stored Responses)."""
    return (name.startswith(".") and name.endswith(_TMP_SUFFIX)) or name.startswith(_LEGACY_TMP_PREFIX)


@contextmanager
def atomic_file(path: Path, *, durable: bool = True, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A file written in full or not at all: what is written goes to a temporary file beside
    ``path``, which is synced and renamed over ``path`` when the block ends without an error.

    ``durable=False`` skips the syncs, for files worth no disk flush (the response cache, whose
    entries carry their own digest): a reader still never sees half a file, but a power cut may
    lose the write. ``mode``: the file's permissions before the umask (0o600: the daemon's user
    only, for what holds users' conversations)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o666) -> None:
    with atomic_file(path, durable=durable, mode=mode) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, *, durable: bool = True, mode: int = 0o666) -> None:
    atomic_write_bytes(path, text.encode(), durable=durable, mode=mode)


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` (relative), replacing whatever was there in one step."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
