"""The model manager's view of the store: a model spec to the directory an engine loads from.

A damaged snapshot (a quarantined file) is refused here, before any engine reads it, and is
repaired by pulling just its bad files when pulling is allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hfd.client.errors import HfdError, ModelUnavailable
from hfd.daemon.settings import ModelSpec, Settings
from hfd.daemon.store.model_store import ModelStore

log = logging.getLogger(__name__)


def resolver(settings: Settings, store: ModelStore | None = None) -> Callable[[ModelSpec], Path]:
    """The model manager's ``resolve``: a model spec to the directory a backend loads from.

    Runs on a worker thread; pulls when ``settings.allow_pull`` is on, and records the use.
    ``store``: the daemon's one store (its pulls then share one single-flight table).
    """
    store = store if store is not None else ModelStore(settings)

    def resolve(spec: ModelSpec) -> Path:
        snap = store.resolve(spec, allow_pull=settings.allow_pull)
        try:
            store.check_loadable(snap)  # a damaged model is refused here, before any engine reads it
        except ModelUnavailable as damaged:
            if not settings.allow_pull:
                raise
            # Its bad files were quarantined: a pull fetches just those; if it cannot, the
            # client hears that the model is damaged, not where the pull looked.
            try:
                snap = store.resolve(spec, allow_pull=True)
                store.check_loadable(snap)
            except HfdError as exc:
                log.warning(
                    "could not repair a damaged model",
                    extra={"model": spec.public_name, "error": exc.message},
                )
                raise damaged from exc
        store.touch(snap)
        return snap.path

    return resolve
