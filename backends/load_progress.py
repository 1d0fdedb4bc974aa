"""What an engine's load is doing now, told to whoever started it.

The model manager lists each load in progress with its phase (``hfd ps``); inside an engine's
load only the engine knows when it stops reading files and starts compiling its graph
(``compiling``) or running its warm-up batch (``warming``). The loader installs a callback for
the thread it loads in (``reporting``); the engine calls ``report`` at each such point. Outside
a load, or for a loader that installed none, ``report`` does nothing, so engines need not know
who loads them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, Literal

Phase = Literal["compiling", "warming"]
PHASES: Final = ("compiling", "warming")

_local = threading.local()


@contextmanager
def reporting(callback: Callable[[Phase], None]) -> Iterator[None]:
    """Send this thread's ``report`` calls to ``callback`` until the block ends."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def report(phase: Phase) -> None:
    """The load running in this thread is now in ``phase``."""
    callback = getattr(_local, "callback", None)
    if callback is not None:
        callback(phase)
