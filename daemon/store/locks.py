"""A lock file shared by every process (and thread) that writes one repository in the store.

``flock`` locks belong to an open file description, so two threads of one process that each
open the file exclude each other just as two processes do, and the kernel drops the lock when
its holder dies (a SIGKILLed pull never leaves the store locked).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hfd.client.errors import Cancelled, Timeout


class FileLock:
    def __init__(
        self,
        path: Path,
        *,
        timeout: float,
        should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._should_stop = should_stop
        self._on_wait = on_wait
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                pass
            if not waited and self._on_wait is not None:
                self._on_wait()
            waited = True
            if self._should_stop is not None and self._should_stop():
                os.close(fd)
                raise Cancelled("pull cancelled while waiting for another pull of the same model")
            if time.monotonic() > deadline:
                os.close(fd)
                raise Timeout(f"another process has held {self.path} for more than {self.timeout:.0f}s")
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_path(locks_dir: Path, key: str) -> Path:
    return locks_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
