"""Dynamic batching of embeddings, on the fake engine (no torch needed) and on the real torch
engine (a tiny BERT built locally, and the real all-MiniLM-L6-v2 for the order check; skipped
where torch is not installed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import numpy as np
import pytest
from support.models import minilm, tiny_bert

from hfd.backends.base import EncoderModel, LoadOptions, TokenizedBatch
from hfd.backends.registry import get_backend
from hfd.client.errors import Cancelled, InternalError, InvalidRequest, Overloaded
from hfd.daemon.scheduler.encoder import EncoderScheduler

pytestmark = pytest.mark.anyio

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "rivers",
    "flow",
    "to",
    "sea",
    "and",
    "mountains",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Distinct sentences of varied length (1 to 30 words)."""
    rng = np.random.default_rng(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for i in range(n)]


def _load(path: Any) -> EncoderModel:
    return get_backend("torch").load_encoder(LoadOptions(path=path, task="embed", threads=1))


@pytest.fixture(scope="module", params=["fake", "torch"])
def bert(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EncoderModel]:
    if request.param == "torch":
        pytest.importorskip("torch")
        model = _load(tiny_bert())
    else:
        opts = LoadOptions(path=tmp_path_factory.mktemp("fake"), task="embed", extra={"dimensions": 32})
        model = get_backend("fake").load_encoder(opts)
    yield model
    model.close()


class Recording:
    """The real engine, recording each batch's shape; ``gate`` holds batches back when cleared."""

    def __init__(self, model: EncoderModel) -> None:
        self.model = model
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        self.gate.wait(30)
        self.batches.append(batch.lengths)
        if self.fail:
            raise RuntimeError("device lost")
        return self.model.embed(batch)


@pytest.fixture
def recording(bert: EncoderModel) -> Recording:
    return Recording(bert)


@pytest.fixture
async def scheduler(recording: Recording) -> AsyncIterator[EncoderScheduler]:
    sched = EncoderScheduler(
        recording, name="bert", max_queue=64, max_batch=8, batch_tokens=4096, wait_ms=5.0
    )  # type: ignore[arg-type]
    sched.start()
    yield sched
    await sched.aclose()


def one_at_a_time(model: EncoderModel, texts: list[str]) -> np.ndarray:
    return np.concatenate([model.embed(model.tokenize([t])) for t in texts])


async def test_concurrent_requests_get_their_own_vectors_in_order(
    scheduler: EncoderScheduler, recording: Recording, bert: EncoderModel
) -> None:
    texts = sentences(24)
    expected = one_at_a_time(bert, texts)
    requests = [texts[i : i + 3] for i in range(0, 24, 3)]
    results = await asyncio.gather(*(scheduler.embed(r) for r in requests))
    for i, result in enumerate(results):
        assert result.vectors.dtype == np.float32
        assert result.vectors.shape == (3, bert.dimensions)
        np.testing.assert_allclose(result.vectors, expected[3 * i : 3 * i + 3], rtol=1e-4, atol=1e-5)
        assert result.prompt_tokens == sum(bert.tokenize(requests[i]).lengths)
    # They were batched: fewer engine calls than inputs, none above max_batch.
    assert len(recording.batches) < 24
    assert max(len(b) for b in recording.batches) <= 8


async def test_a_large_request_is_split_and_reassembled(
    scheduler: EncoderScheduler, recording: Recording, bert: EncoderModel
) -> None:
    texts = sentences(30, seed=1)
    result = await scheduler.embed(texts)
    np.testing.assert_allclose(result.vectors, one_at_a_time(bert, texts), rtol=1e-4, atol=1e-5)
    assert sum(len(b) for b in recording.batches) == 30
    assert len(recording.batches) >= 4  # 30 inputs, at most 8 per batch
    assert scheduler.stats().inputs == 30


async def test_batches_respect_the_token_budget_and_group_similar_lengths(
    recording: Recording, bert: EncoderModel
) -> None:
    budget = 96
    sched = EncoderScheduler(
        recording, name="bert", max_queue=8, max_batch=32, batch_tokens=budget, wait_ms=1.0
    )  # type: ignore[arg-type]
    sched.start()
    try:
        texts = sentences(40, seed=2)
        lengths = bert.tokenize(texts).lengths
        recording.gate.clear()  # let every input queue up before the first batch is chosen
        task = asyncio.create_task(sched.embed(texts))
        await asyncio.sleep(0.2)
        recording.gate.set()
        result = await task
        np.testing.assert_allclose(result.vectors, one_at_a_time(bert, texts), rtol=1e-4, atol=1e-5)
    finally:
        await sched.aclose()
    for batch in recording.batches:
        assert len(batch) == 1 or len(batch) * max(batch) <= budget
    # Sorting by length wastes less than batching in arrival order would.
    padded = sum(len(b) * max(b) for b in recording.batches)
    naive, chunk = 0, list[int]()
    for n in lengths:
        if chunk and (len(chunk) + 1) * max([*chunk, n]) > budget:
            naive += len(chunk) * max(chunk)
            chunk = []
        chunk.append(n)
    naive += len(chunk) * max(chunk)
    assert padded < naive


async def test_real_minilm_batched_equals_one_at_a_time() -> None:
    pytest.importorskip("torch")
    model = _load(minilm())
    sched = EncoderScheduler(model, name="minilm", max_queue=16, max_batch=4, batch_tokens=8192, wait_ms=2.0)
    sched.start()
    try:
        texts = [
            "A man is eating food.",
            "A man rides a horse.",
            "The new movie is awesome.",
            "Cats sleep all day long",
            "ok",
        ]
        results = await asyncio.gather(sched.embed(texts[:2]), sched.embed(texts[2:]), sched.embed(texts[4:]))
        np.testing.assert_allclose(
            np.concatenate([r.vectors for r in results[:2]]),
            one_at_a_time(model, texts),
            rtol=1e-4,
            atol=1e-5,
        )
        np.testing.assert_allclose(results[2].vectors, results[1].vectors[2:], rtol=1e-4, atol=1e-5)
    finally:
        await sched.aclose()
        model.close()


async def test_a_full_queue_answers_overloaded_and_recovers(recording: Recording) -> None:
    sched = EncoderScheduler(recording, name="bert", max_queue=2, max_batch=8, batch_tokens=4096, wait_ms=1.0)  # type: ignore[arg-type]
    sched.start()
    try:
        recording.gate.clear()
        held = [asyncio.create_task(sched.embed([t])) for t in sentences(2)]
        await asyncio.sleep(0.1)
        assert sched.active == 2
        with pytest.raises(Overloaded) as err:
            await sched.embed(["one too many"])
        assert err.value.code == "overloaded"
        assert err.value.retry_after is not None and err.value.retry_after > 0
        recording.gate.set()
        assert all(r.vectors.shape[0] == 1 for r in await asyncio.gather(*held))
        assert sched.active == 0
        again = await sched.embed(["back to normal"])
        assert again.vectors.shape[0] == 1
        assert sched.stats().requests_rejected == 1
    finally:
        recording.gate.set()
        await sched.aclose()


async def test_an_engine_failure_fails_that_batch_only(
    scheduler: EncoderScheduler, recording: Recording
) -> None:
    recording.fail = True
    with pytest.raises(InternalError, match="device lost"):
        await scheduler.embed(sentences(3))
    recording.fail = False
    assert (await scheduler.embed(sentences(2))).vectors.shape[0] == 2
    assert scheduler.stats().errors == 1


async def test_a_cancelled_caller_leaves_nothing_behind(
    scheduler: EncoderScheduler, recording: Recording
) -> None:
    recording.gate.clear()
    task = asyncio.create_task(scheduler.embed(sentences(20)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    recording.gate.set()
    result = await scheduler.embed(["after"])
    assert result.vectors.shape[0] == 1
    # The first batch was already running; the rest of the cancelled request was dropped.
    assert sum(len(b) for b in recording.batches) == 8 + 1
    assert scheduler.active == 0


async def test_closing_fails_pending_requests(recording: Recording) -> None:
    sched = EncoderScheduler(recording, name="bert", max_queue=8, max_batch=2, batch_tokens=4096, wait_ms=1.0)  # type: ignore[arg-type]
    sched.start()
    recording.gate.clear()
    task = asyncio.create_task(sched.embed(sentences(6)))
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(sched.aclose(grace=0.0))
    await asyncio.sleep(0.05)
    recording.gate.set()
    await closing
    with pytest.raises(Cancelled):
        await task


async def test_empty_input_is_refused(scheduler: EncoderScheduler) -> None:
    with pytest.raises(InvalidRequest):
        await scheduler.embed([])


class Entered(Recording):
    """Recording, also saying when the engine has been entered (the first batch is computing)."""

    def __init__(self, model: EncoderModel) -> None:
        super().__init__(model)
        self.entered = threading.Event()

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        self.entered.set()
        return super().embed(batch)


async def test_an_abandoned_request_stops_at_the_next_batch_boundary(bert: EncoderModel) -> None:
    engine = Entered(bert)
    sched = EncoderScheduler(engine, name="bert", max_queue=8, max_batch=8, batch_tokens=1 << 20, wait_ms=0.0)  # type: ignore[arg-type]
    sched.start()
    try:
        engine.gate.clear()  # the engine is slow: the first batch computes until the gate opens
        texts = [f"{i} the quick brown fox" for i in range(1024)]
        with anyio.CancelScope() as scope:  # what a door does when its client goes away
            async with anyio.create_task_group() as tg:
                tg.start_soon(sched.embed, texts)
                await anyio.to_thread.run_sync(engine.entered.wait, 30)
                scope.cancel()
        assert scope.cancelled_caught
        # Dropped before the worker takes another batch, while the first one still computes.
        assert sched.stats().dropped_items == 1024 - 8
        assert sched.stats().pending_inputs == 0
        engine.gate.set()
        after = await sched.embed(["next"])
        assert after.vectors.shape[0] == 1
        # The engine saw the first batch of the abandoned request, then the one-item request.
        assert [len(b) for b in engine.batches] == [8, 1]
        assert sched.stats().inputs == 9 and sched.active == 0
    finally:
        engine.gate.set()
        await sched.aclose()
