"""The background scrub: re-hash stored blobs, least recently verified first, at a bounded rate.

Off by default (``store_scrub_interval = 0``). When on, the daemon wakes every
``store_scrub_interval`` seconds and re-hashes one blob (the one verified longest ago, or never)
reading at most ``store_scrub_rate`` MB/s, so a store of any size is walked slowly without
competing with inference for the disk. A bad blob is quarantined exactly as ``hfd verify`` does,
and the next load of its model is refused until ``hfd pull`` fetched it again.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from hfd.client.errors import HfdError
from hfd.daemon.settings import Settings
from hfd.daemon.store.verify import Expected, hash_ok, quarantine, stat_key

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore

log = logging.getLogger(__name__)


def scrub_once(store: ModelStore, *, rate: float | None, stop: threading.Event | None = None) -> str | None:
    """Re-hash the least recently verified blob; returns its name (None when there is none)."""
    picked = store._catalog_call(lambda: store.catalog.least_recently_verified(1), [])
    if not picked:
        return None
    repo, blob, sha256, size = picked[0]
    repo_dir = store.layout.repo(repo)
    path = repo_dir.blob(blob)
    before = stat_key(path)
    try:
        problem = hash_ok(path, Expected(blob, size, sha256), rate=rate, stop=stop)
    except InterruptedError:
        return None
    if problem is None and before is not None:
        store._catalog_call(lambda: store.catalog.record_verified(repo, [(blob, before)]), None)
        log.debug("blob scrubbed", extra={"repo": repo, "blob": blob, "size": size})
        return blob
    if problem is None:
        return blob
    log.warning("scrub found a bad blob", extra={"repo": repo, "blob": blob, "problem": problem})
    if before is None:
        # Gone (removed or quarantined meanwhile): mark it, so the scrub moves on to the next one.
        store._catalog_call(lambda: store.catalog.record_quarantined(repo, blob, problem), None)
        return blob
    with store.repo_lock(repo):
        quarantine(store, repo_dir, blob, problem)
    return blob


async def scrub_loop(settings: Settings, store: ModelStore | None = None) -> None:
    """Run until cancelled (the daemon starts it when ``store_scrub_interval`` > 0)."""
    interval = settings.store_scrub_interval
    if interval <= 0:
        return
    if store is None:
        from hfd.daemon.store.model_store import ModelStore

        store = ModelStore(settings)
    rate = settings.store_scrub_rate * 1e6 if settings.store_scrub_rate > 0 else None
    stop = threading.Event()
    log.info("store scrub on", extra={"interval": interval, "rate_mb_s": settings.store_scrub_rate})
    try:
        while True:
            await anyio.sleep(interval)
            try:
                # Abandoned on cancel: the stop event ends the hash at its next chunk.
                await anyio.to_thread.run_sync(
                    lambda: scrub_once(store, rate=rate, stop=stop), abandon_on_cancel=True
                )
            except HfdError as exc:
                log.warning("store scrub failed", extra={"error": exc.message})
            except OSError as exc:
                log.warning("store scrub failed", extra={"error": str(exc)})
    finally:
        stop.set()
