"""The media scheduler's batch hook: requests waiting for the same call with an equal key share
one engine call (at most its limit), each gets its own result or error, and cancelled callers
neither reach the engine nor strand the requests batched with them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from hfd.client.errors import InvalidRequest
from hfd.daemon.media_worker import MediaScheduler


class Engine:
    """Records each call's items; the first call waits for ``gate`` so others queue behind it."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.gate = threading.Event()

    def batch(self, items: list[Any]) -> list[Any]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.gate.wait(10)
        return [InvalidRequest(f"bad {i}", param="file") if i == "bad" else f"<{i}>" for i in items]


def _started() -> tuple[Engine, MediaScheduler]:
    s = MediaScheduler(object(), name="m", max_queue=16)
    s.start()
    return Engine(), s


async def _queue_behind_first(s: MediaScheduler, engine: Engine, jobs: list[tuple[Any, Any]],
                              results: dict[Any, Any], limit: int = 3) -> None:  # fmt: skip
    """Run item 0 (it blocks the engine), queue ``jobs`` behind it, then open the gate."""
    async with anyio.create_task_group() as tg:

        async def one(item: Any, key: Any) -> None:
            try:
                results[item] = await s.run_batched(engine.batch, item, key=key, limit=limit)
            except InvalidRequest as exc:
                results[item] = exc

        tg.start_soon(one, 0, "a")
        await anyio.sleep(0.05)
        for item, key in jobs:
            tg.start_soon(one, item, key)
            await anyio.sleep(0.01)
        engine.gate.set()


@pytest.mark.anyio
async def test_waiting_requests_with_one_key_share_a_call_up_to_the_limit() -> None:
    engine, s = _started()
    results: dict[Any, Any] = {}
    jobs = [(1, "a"), (2, "b"), (3, "a"), ("bad", "a"), (5, "a"), (6, None), (7, None), (8, "b")]
    await _queue_behind_first(s, engine, jobs, results)
    # In arrival order of each call's first request; an equal key joins, up to 3; None: alone.
    assert engine.calls == [[0], [1, 3, "bad"], [2, 8], [5], [6], [7]]
    assert results[1] == "<1>" and results[8] == "<8>" and results[7] == "<7>"
    assert isinstance(results["bad"], InvalidRequest) and results[3] == "<3>"  # its error alone
    stats = s.stats()
    assert stats.calls == 6 and stats.requests_finished == 9 and stats.active == 0 and stats.waiting == 0
    await s.aclose()
    # Closing waits for the queue behind a call of its own, which is no request's: not counted.
    after = s.stats()
    assert (after.calls, after.requests_finished) == (stats.calls, stats.requests_finished)


@pytest.mark.anyio
async def test_cancelled_waiters_are_dropped_and_batch_mates_still_answered() -> None:
    engine, s = _started()
    results: dict[Any, Any] = {}
    tasks: dict[Any, asyncio.Task[None]] = {}

    async def one(item: Any, key: Any) -> None:
        results[item] = await s.run_batched(engine.batch, item, key=key, limit=4)
        if item == 0:  # 1 was just woken to make the next call: cancel its task before it runs
            tasks[1].cancel()

    # Plain asyncio tasks, cancelled as vision chat's stream cancels its own (Task.cancel).
    tasks[0] = asyncio.ensure_future(one(0, "x"))
    await anyio.sleep(0.05)
    for item in (1, 2, 3):  # 1 leads the next call; 2 and 3 would join it
        tasks[item] = asyncio.ensure_future(one(item, "a"))
        await anyio.sleep(0.01)
    tasks[4] = asyncio.ensure_future(one(4, "b"))
    await anyio.sleep(0.01)
    tasks[2].cancel()  # its client went away while it waited: never computed
    await anyio.sleep(0.01)
    engine.gate.set()  # the woken and cancelled 1 still makes its call, for 3
    done = await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert [isinstance(d, asyncio.CancelledError) for d in done] == [False, True, True, False, False]
    assert engine.calls == [[0], [1, 3], [4]]
    assert results == {0: "<0>", 3: "<3>", 4: "<4>"}
    assert s.stats().dropped == 1 and s.stats().active == 0
    await s.aclose()


@pytest.mark.anyio
async def test_a_failed_batched_call_fails_each_of_its_requests() -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("engine died")

    s = MediaScheduler(object(), name="m", max_queue=4)
    s.start()
    with pytest.raises(Exception, match="engine died"):
        await s.run_batched(broken, 1, key="k", limit=2)
    with pytest.raises(Exception, match="2 results for 1 items"):  # one result per item, or none
        await s.run_batched(lambda items: [1, 2], 1, key="k", limit=2)
    assert s.stats().errors == 2
    assert await s.run(lambda a, b: a + b, 2, 3) == 5  # the one-call way in, after them
    await s.aclose()
    with pytest.raises(Exception, match="not running"):
        await s.run(lambda: None)
