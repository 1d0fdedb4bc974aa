"""The CID index: a text file of ``org/name[@revision] <cid>`` lines (``#`` starts a comment).

It is how a box learns that a model is on IPFS before asking the Hub: an operator ships the
file with the box (``ipfs_index`` setting), and ``hfd publish`` adds to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hfd.daemon.store.files import atomic_write_text

log = logging.getLogger(__name__)


def read_index(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    except OSError as exc:
        log.warning("cannot read the CID index", extra={"path": str(path), "error": str(exc)})
        return out
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            log.warning("ignoring a malformed CID index line", extra={"path": str(path), "line": number})
            continue
        out[parts[0]] = parts[1]
    return out


def lookup(index: dict[str, str], repo: str, revision: str) -> str | None:
    cid = index.get(f"{repo}@{revision}")
    if cid is None and revision == "main":
        cid = index.get(repo)
    return cid


def update_index(path: Path, entries: dict[str, str]) -> None:
    """Set ``key -> cid`` for each entry, keeping every other line as it was."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    remaining = dict(entries)
    out: list[str] = []
    for line in lines:
        key = line.split("#", 1)[0].split()
        if key and key[0] in remaining:
            out.append(f"{key[0]} {remaining.pop(key[0])}")
        else:
            out.append(line)
    out.extend(f"{k} {v}" for k, v in remaining.items())
    atomic_write_text(path, "\n".join(out) + "\n")
