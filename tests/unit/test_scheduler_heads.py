"""The encoder scheduler's ``run()`` for classification heads: inputs tokenised by the caller
(text pairs with segment ids) are batched across requests, each input's output row comes back
in order, a token head's rows are cut to the input's length, and a cancelled caller's inputs
not yet computed are dropped. A numpy head stands in for an engine (its outputs are a function
of the ids and segment ids it was given, so any mix-up between requests shows)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import anyio
import numpy as np

from hfd.backends.base import TokenizedBatch
from hfd.daemon.scheduler.encoder import EncoderScheduler


class NumpyHead:
    name = "numpy"
    device = "cpu"
    max_length = 64
    dimensions = 2

    def __init__(self, per_token: bool, gate: threading.Event | None = None) -> None:
        self.per_token = per_token
        self.gate = gate
        self.batches: list[int] = []

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        return TokenizedBatch([[len(t)] for t in texts])

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(len(batch.ids))
        width = max(batch.lengths)
        types = batch.type_ids or [[0] * len(r) for r in batch.ids]
        out = np.full((len(batch.ids), width, 2), -1.0, dtype=np.float32)  # padding rows: -1
        for i, (ids, tt) in enumerate(zip(batch.ids, types, strict=True)):
            out[i, : len(ids), 0] = ids
            out[i, : len(ids), 1] = tt
        return out if self.per_token else np.where(out < 0, 0, out).sum(axis=1)

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _scheduler(model: NumpyHead) -> EncoderScheduler:
    s = EncoderScheduler(model, name="m", max_queue=64, max_batch=32, batch_tokens=4096, wait_ms=20)
    s.start()
    return s


def _expected(batch: TokenizedBatch, per_token: bool) -> list[np.ndarray]:
    rows = []
    for ids, tt in zip(batch.ids, batch.type_ids or [], strict=True):
        row = np.stack([np.array(ids, np.float32), np.array(tt, np.float32)], axis=1)
        rows.append(row if per_token else row.sum(axis=0))
    return rows


def _request(i: int) -> TokenizedBatch:
    ids = [[i * 100 + j + k for k in range(1 + (i + j) % 5)] for j in range(3)]
    return TokenizedBatch(ids, [[k % 2 for k in range(len(r))] for r in ids])


def test_concurrent_runs_equal_one_at_a_time_and_rows_are_cut_to_length() -> None:
    for per_token in (False, True):
        model = NumpyHead(per_token)

        async def go(model: NumpyHead = model, per_token: bool = per_token) -> None:
            s = _scheduler(model)
            try:
                results: dict[int, list[np.ndarray]] = {}

                async def one(i: int) -> None:
                    results[i] = (await s.run(_request(i))).rows

                async with anyio.create_task_group() as tg:
                    for i in range(12):
                        tg.start_soon(one, i)
                for i in range(12):
                    expected = _expected(_request(i), per_token)
                    assert len(results[i]) == len(expected)
                    for got, want in zip(results[i], expected, strict=True):
                        np.testing.assert_array_equal(got, want)  # no padding rows (-1) left
                assert max(model.batches) > 3  # inputs of several requests shared batches
            finally:
                await s.aclose()

        anyio.run(go)


def test_a_cancelled_run_drops_its_pending_inputs() -> None:
    gate = threading.Event()
    model = NumpyHead(False, gate)

    async def go() -> None:
        s = EncoderScheduler(model, name="m", max_queue=64, max_batch=2, batch_tokens=4096, wait_ms=0)
        s.start()
        try:
            with anyio.move_on_after(0.3):
                await s.run(TokenizedBatch([[1]] * 10, [[0]] * 10))
            gate.set()
            await s.run(TokenizedBatch([[5]], [[1]]))
            assert s.stats().dropped_items >= 6  # at most two batches had started
            assert sum(model.batches) < 10 + 1
        finally:
            await s.aclose()

    anyio.run(go)
