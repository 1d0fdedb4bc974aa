"""The local model store: Hugging Face cache layout, DuckDB catalog, pulls from IPFS or the Hub.

The names below are imported lazily, so ``import hfd.daemon.store.<module>`` stays cheap. The
store imports ``hfd.ipfs``, never the other way round: the digests and path checks both use live
in ``hfd._digests`` and ``hfd._safe_paths``. The async pull is
``await store.apull(ref, progress)`` or ``hfd.daemon.store.pull.pull(store, ref, progress)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hfd.daemon.store.model_store import ModelStore, Removed
    from hfd.daemon.store.pull import PullProgress
    from hfd.daemon.store.resolving import resolver
    from hfd.daemon.store.sharing import PublishResult
    from hfd.daemon.store.snapshot import Snapshot, SnapshotInfo

__all__ = ["ModelStore", "PublishResult", "PullProgress", "Removed", "Snapshot", "SnapshotInfo", "resolver"]

_WHERE = {
    "ModelStore": "model_store",
    "PublishResult": "sharing",
    "Removed": "model_store",
    "resolver": "resolving",
    "PullProgress": "pull",
    "Snapshot": "snapshot",
    "SnapshotInfo": "snapshot",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
