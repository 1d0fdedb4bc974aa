"""The CID index: a text file of ``org/name[@revision] <cid>`` lines (``#`` starts a comment).

It is how a box learns that a model is on IPFS before asking the Hub: an operator ships the
file with the box (``ipfs_index`` setting), and ``hfd publish`` adds to it. ``candidate_cids``
lists every CID known for a reference, this file among them, in the order a pull tries them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hfd._atomic_files import atomic_write_text
from hfd.daemon.store.fetch import Attempt

if TYPE_CHECKING:
    from hfd.daemon.settings import Settings
    from hfd.daemon.store.refs import ModelRef

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


def candidate_cids(
    settings: Settings, mref: ModelRef, attempts: list[Attempt], published: Callable[[], list[str]]
) -> Iterator[tuple[str, str]]:
    """The CIDs known for a repo reference, in order (its ``[[models]] cid``, the index file,
    earlier publishes from this store: ``published``), each with the place to name in errors;
    records in ``attempts`` why IPFS was skipped."""
    assert mref.repo is not None
    base = f"IPFS ({settings.ipfs_api})"
    if not settings.ipfs_enabled:
        attempts.append(Attempt(base, "not tried: ipfs_enabled = false"))
        return
    cids: list[str] = []
    if mref.cid:
        cids.append(mref.cid)
    if settings.ipfs_index is not None:
        cid = lookup(read_index(settings.ipfs_index), mref.repo, mref.revision)
        if cid:
            cids.append(cid)
    cids += published()
    cids = list(dict.fromkeys(cids))
    if not cids:
        attempts.append(Attempt(base, "no CID known for it ([[models]] cid, ipfs_index, earlier publish)"))
        return
    for cid in cids:
        yield cid, f"{base} ipfs://{cid}"
