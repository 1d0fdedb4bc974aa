"""The HTTP door's one disconnect helper (as vLLM's ``with_cancellation``): run a piece of work
while watching the connection, and cancel the work when the client goes away.

Every reply that may outlive its client goes through :func:`until_disconnect`: a whole
completion being collected, an embedding, a pull, an SSE or NDJSON stream being written. Waiting
for the disconnect message does not rely on a failed ``send`` (which only happens at the next
write) or on garbage collection, so a generation leaves the batch at the next step and an
encoder's items not yet computed are dropped at the next batch boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import anyio
from starlette.types import Receive

if TYPE_CHECKING:
    from hfd.daemon.results import Generation

T = TypeVar("T")


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client has disconnected (the request body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(work: Callable[[], Awaitable[T]], receive: Receive) -> tuple[bool, T | None]:
    """``(True, result)`` of ``work``, or ``(False, None)`` when the client went away first
    (``work`` is then cancelled). An exception from ``work`` is raised as itself, never inside
    an exception group."""
    outcome: list[T] = []
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await wait_disconnect(receive)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            outcome.append(await work())
        except Exception as exc:  # kept out of the task group's exception group
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return (True, outcome[0]) if outcome else (False, None)


async def whole_text(gen: Generation, receive: Receive) -> str | None:
    """All of ``gen``'s text, or None when the client went away first (the generation is then
    cancelled: it leaves the batch at the next step). ``gen`` is closed however this ends."""

    async def collect() -> str:
        async with gen:
            return await gen.text()

    finished, text = await until_disconnect(collect, receive)
    return text if finished else None
