"""A configured model's task before it is loaded, for ``/v1/models`` and ``hfd ls``: its pin,
else what its files in the store say (never fetches; config.json and README.md are read once
per snapshot directory)."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from hfd.daemon.tasks.registry import guess_task

if TYPE_CHECKING:
    from hfd.daemon.settings import ModelSpec
    from hfd.daemon.store import ModelStore

log = logging.getLogger(__name__)


def listed_task(spec: ModelSpec, store: ModelStore) -> str | None:
    """``spec``'s task, or None when it is pinned nowhere and its files are not here yet."""
    if spec.task:
        return spec.task
    try:
        snapshot = store.find(spec)
    except Exception as exc:  # a listing must not fail on one model's bad reference
        log.debug(
            "cannot find a model's files for its task", extra={"model": spec.public_name, "error": str(exc)}
        )
        return None
    if snapshot is None:
        return None
    return _snapshot_task(str(snapshot.path))


@lru_cache(maxsize=256)
def _snapshot_task(path: str) -> str | None:
    # A snapshot directory's files do not change (a new revision is a new directory); a local
    # directory that does change is re-read at load, where the task that serves is decided.
    return guess_task(Path(path))
