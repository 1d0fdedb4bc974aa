"""Log lines for IPC messages the door drops, rate-limited: a client that sends garbage in a
loop gets one line per kind of drop every few seconds, with a count, not one line a message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hfd.daemon.zmq.server")


class DropLog:
    def __init__(self, interval: float = 5.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def drop(self, message: str, **extra: Any) -> bool:
        """Count one dropped message; log ``message`` unless it was logged within the interval.
        Returns whether a line was written."""
        now = self.clock()
        last = self._last.get(message)
        if last is not None and now - last < self.interval:
            self._suppressed[message] = self._suppressed.get(message, 0) + 1
            return False
        log.warning(
            message,
            extra={**extra, "dropped_since_last_report": self._suppressed.pop(message, 0) + 1},
        )
        self._last[message] = now
        return True
