"""A door (the HTTP or the IPC server) served on its own event loop in a thread, as the daemon
runs it, for tests that talk to it from blocking code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.from_thread


class Door(Protocol):
    async def serve(self, *, task_status: anyio.abc.TaskStatus[Any] = ...) -> None: ...

    def shutdown(self) -> None: ...


D = TypeVar("D", bound=Door)


@contextmanager
def door_in_thread(build: Callable[[], D]) -> Iterator[tuple[D, str, anyio.from_thread.BlockingPortal]]:
    """``(door, address, portal)`` while the door serves; ``build`` runs on the door's loop (the
    doors make their anyio primitives there). Shut down, socket released, afterwards."""
    with anyio.from_thread.start_blocking_portal() as portal:

        async def make() -> D:
            return build()

        door = portal.call(make)
        future, address = portal.start_task(door.serve)
        try:
            yield door, address, portal
        finally:
            portal.call(door.shutdown)
            future.result(timeout=15)
