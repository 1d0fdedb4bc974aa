"""Waiting on a condition another thread or process brings about: polled until true or out of time."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Whether ``check()`` turned true within ``timeout`` seconds (polled every ``interval``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False
