"""Continuous batching, on the fake engine (no torch needed) and on the real torch engine with a
tiny Llama built locally (skipped where torch is not installed)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from support.models import tiny_llama

from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams, StepOutput
from hfd.backends.registry import get_backend
from hfd.client.errors import Cancelled, InternalError, Overloaded
from hfd.daemon.scheduler.generation import GenerationScheduler, GenerationStream, TokenChunk

pytestmark = pytest.mark.anyio

GREEDY16 = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
PROMPTS = [
    "The quick brown fox",
    "Machine learning models turn text into numbers and numbers back into text, one token at a time",
    "What is the capital of France?",
    "Rivers flow",
]


@pytest.fixture(scope="module", params=["fake", "torch"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GenerationModel]:
    if request.param == "torch":
        pytest.importorskip("torch")
        path = tiny_llama()
        extra: dict[str, Any] = {}
    else:
        # A step takes a few ms, as the tiny Llama's does, so a long request is still running
        # when a test looks at it.
        path, extra = tmp_path_factory.mktemp("fake"), {"step_ms": 5}
    model = get_backend(request.param).load_generator(
        LoadOptions(path=path, task="generate", threads=1, max_running=8, max_batched_tokens=512, extra=extra)
    )
    yield model
    model.close()


@contextlib.asynccontextmanager
async def scheduling(engine: GenerationModel, **options: Any) -> AsyncIterator[GenerationScheduler]:
    """A started scheduler over ``engine``, closed afterwards (when the block fails too)."""
    sched = GenerationScheduler(engine, **options)
    sched.start()
    try:
        yield sched
    finally:
        await sched.aclose()


@pytest.fixture
async def scheduler(engine: GenerationModel) -> AsyncIterator[GenerationScheduler]:
    sched = GenerationScheduler(engine, name="tiny", max_queue=16, max_running=8)
    sched.start()
    yield sched
    await sched.aclose()
    assert not engine.has_work(), "the scheduler left sequences in the engine"


def ids(engine: GenerationModel, text: str) -> list[int]:
    return engine.encode_prompt(text)


async def collect(stream: GenerationStream) -> list[TokenChunk]:
    return [chunk async for chunk in stream]


def tokens(chunks: Sequence[TokenChunk]) -> list[int]:
    return [t for c in chunks for t in c.token_ids]


def text(chunks: Sequence[TokenChunk]) -> str:
    return "".join(c.text for c in chunks)


async def alone(
    sched: GenerationScheduler, engine: GenerationModel, prompt: str, params: SamplingParams
) -> list[TokenChunk]:
    return await collect(sched.submit(ids(engine, prompt), params))


# -- batching does not change results --------------------------------------------------------


async def test_greedy_tokens_are_the_same_alone_and_in_a_changing_batch(
    scheduler: GenerationScheduler, engine: GenerationModel
) -> None:
    expected = [tokens(await alone(scheduler, engine, p, GREEDY16)) for p in PROMPTS]
    assert all(len(e) == 16 for e in expected)

    # Requests of different lengths join while others are mid-generation.
    results: dict[int, list[int]] = {}
    async with asyncio.TaskGroup() as tg:

        async def run(i: int) -> None:
            results[i] = tokens(await collect(scheduler.submit(ids(engine, PROMPTS[i]), GREEDY16)))

        first = scheduler.submit(ids(engine, PROMPTS[0]), GREEDY16)
        got0: list[TokenChunk] = []
        async for chunk in first:
            got0.append(chunk)
            if len(got0) == 3:
                tg.create_task(run(1))
            if len(got0) == 6:
                tg.create_task(run(2))
                tg.create_task(run(3))
        results[0] = tokens(got0)
    assert [results[i] for i in range(len(PROMPTS))] == expected
    assert scheduler.stats().mean_batch_size > 1.0


async def test_seeded_sampling_is_the_same_alone_and_among_greedy_requests(
    scheduler: GenerationScheduler, engine: GenerationModel
) -> None:
    sampled = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=1234, ignore_eos=True)
    solo = text(await alone(scheduler, engine, PROMPTS[2], sampled))
    greedy = text(await alone(scheduler, engine, PROMPTS[2], GREEDY16))
    assert solo != greedy, "the seeded request should differ from greedy decoding"

    batch = await asyncio.gather(
        collect(scheduler.submit(ids(engine, PROMPTS[0]), GREEDY16)),
        collect(scheduler.submit(ids(engine, PROMPTS[2]), sampled)),
        collect(scheduler.submit(ids(engine, PROMPTS[1]), GREEDY16)),
        collect(scheduler.submit(ids(engine, PROMPTS[2]), GREEDY16)),
    )
    assert text(batch[1]) == solo
    assert text(batch[3]) == greedy


async def test_each_request_keeps_its_own_max_tokens(
    scheduler: GenerationScheduler, engine: GenerationModel
) -> None:
    limits = [1, 3, 7, 12]
    streams = [
        scheduler.submit(ids(engine, p), SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
        for p, n in zip(PROMPTS, limits, strict=True)
    ]
    outs = await asyncio.gather(*(collect(s) for s in streams))
    assert [len(tokens(o)) for o in outs] == limits
    assert [s.completion_tokens for s in streams] == limits
    assert all(s.finish_reason == "length" for s in streams)
    for out in outs:
        assert [c.finish_reason for c in out[:-1]] == [None] * (len(out) - 1)
        assert out[-1].finish_reason == "length"


async def test_text_matches_decoding_all_tokens(
    scheduler: GenerationScheduler, engine: GenerationModel
) -> None:
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    prompt = ids(engine, PROMPTS[1])
    stream = scheduler.submit(prompt, params)
    chunks = await collect(stream)
    assert stream.prompt_tokens == len(prompt)
    full = engine.decode(prompt[-5:] + tokens(chunks))
    assert text(chunks) == full[len(engine.decode(prompt[-5:])) :]


# -- stop strings ------------------------------------------------------------------------------


async def test_stop_strings_cut_the_text(scheduler: GenerationScheduler, engine: GenerationModel) -> None:
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    chunks = await alone(scheduler, engine, PROMPTS[0], params)
    full = text(chunks)
    starts = [sum(len(c.text) for c in chunks[:i]) for i in range(len(chunks))]

    def first_seen_at(offset: int, piece: str) -> bool:
        return len(piece) >= 2 and "\ufffd" not in piece and full.index(piece) == offset

    # One stop string inside a single piece, one spanning the end of a piece and the next.
    inside_at = next(i for i in range(2, len(chunks)) if first_seen_at(starts[i], chunks[i].text))
    span_at = next(
        i
        for i in range(2, len(chunks) - 1)
        if len(chunks[i].text) >= 2
        and first_seen_at(starts[i + 1] - 2, chunks[i].text[-2:] + chunks[i + 1].text[:2])
    )
    inside = chunks[inside_at].text
    spanning = chunks[span_at].text[-2:] + chunks[span_at + 1].text[:2]
    for stop in (spanning, inside):
        stream = scheduler.submit(ids(engine, PROMPTS[0]), replace(params, stop=(stop, "never-there")))
        got = await collect(stream)
        assert text(got) == full[: full.index(stop)]
        assert stop not in text(got)
        assert got[-1].finish_reason == "stop"
        assert stream.finish_reason == "stop"
        assert got[-1].stop_sequence == stream.stop_sequence == stop  # which one matched
        assert stream.completion_tokens < 40


async def test_a_stop_string_ends_one_request_of_a_batch(
    scheduler: GenerationScheduler, engine: GenerationModel
) -> None:
    """The stopped sequence leaves the engine mid-batch; its neighbours go on unchanged."""
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    expected = [text(await alone(scheduler, engine, p, params)) for p in PROMPTS[:3]]
    stop = expected[0][len(expected[0]) // 3 :][:3]
    outs = await asyncio.gather(
        collect(scheduler.submit(ids(engine, PROMPTS[0]), replace(params, stop=(stop,)))),
        collect(scheduler.submit(ids(engine, PROMPTS[1]), params)),
        collect(scheduler.submit(ids(engine, PROMPTS[2]), params)),
    )
    assert text(outs[0]) == expected[0][: expected[0].index(stop)]
    assert outs[0][-1].finish_reason == "stop"
    assert [text(o) for o in outs[1:]] == expected[1:]


async def test_a_stop_string_never_matched_leaves_the_text_whole(
    scheduler: GenerationScheduler, engine: GenerationModel
) -> None:
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    full = text(await alone(scheduler, engine, PROMPTS[3], params))
    stopped = replace(params, stop=("\x00never",))
    got = await alone(scheduler, engine, PROMPTS[3], stopped)
    assert text(got) == full
    assert got[-1].finish_reason == "length"


# -- cancellation and back-pressure ------------------------------------------------------------

LONG = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)


async def test_cancelling_frees_the_slot_for_a_waiting_request(engine: GenerationModel) -> None:
    async with scheduling(engine, name="one", max_queue=4, max_running=1) as sched:
        running = sched.submit(ids(engine, PROMPTS[0]), LONG)
        first = await running.__anext__()
        assert first.token_ids
        waiting = sched.submit(
            ids(engine, PROMPTS[1]), SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
        )
        await asyncio.sleep(0.05)
        assert sched.stats().waiting == 1 and sched.stats().running == 1
        assert sched.active == 2

        running.cancel()
        rest = await collect(running)
        assert rest[-1].finish_reason == "cancelled"
        assert running.finish_reason == "cancelled"
        assert running.completion_tokens < 200
        done = await asyncio.wait_for(collect(waiting), 30)
        assert len(tokens(done)) == 4
        assert sched.active == 0
    assert not engine.has_work()


async def test_a_reader_that_goes_away_frees_its_slot(engine: GenerationModel) -> None:
    async with scheduling(engine, name="one", max_queue=4, max_running=1) as sched:
        stream = sched.submit(ids(engine, PROMPTS[0]), LONG)

        async def read() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.1)
        task.cancel()  # a client disconnecting cancels the task reading its stream
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await asyncio.wait_for(collect(sched.submit(ids(engine, PROMPTS[2]), GREEDY16)), 30)
        assert len(tokens(after)) == 16
        assert stream.completion_tokens < 200


async def test_closing_a_stream_before_it_starts_cancels_it(engine: GenerationModel) -> None:
    async with scheduling(engine, name="one", max_queue=4, max_running=1) as sched:
        running = sched.submit(ids(engine, PROMPTS[0]), GREEDY16)
        queued = sched.submit(ids(engine, PROMPTS[1]), GREEDY16)
        async with queued:
            pass
        assert queued.finish_reason == "cancelled"
        assert len(tokens(await collect(running))) == 16
        await asyncio.sleep(0.05)
        assert sched.active == 0
        assert sched.stats().requests_finished == 1


async def test_a_full_queue_answers_overloaded_and_recovers(engine: GenerationModel) -> None:
    async with scheduling(engine, name="one", max_queue=1, max_running=1) as sched:
        running = sched.submit(ids(engine, PROMPTS[0]), LONG)
        await running.__anext__()
        queued = sched.submit(ids(engine, PROMPTS[1]), GREEDY16)
        with pytest.raises(Overloaded) as err:
            sched.submit(ids(engine, PROMPTS[2]), GREEDY16)
        assert err.value.code == "overloaded"
        assert err.value.retry_after is not None and err.value.retry_after > 0
        assert sched.stats().requests_rejected == 1

        await running.aclose()
        assert len(tokens(await collect(queued))) == 16
        again = await collect(sched.submit(ids(engine, PROMPTS[2]), GREEDY16))
        assert len(tokens(again)) == 16


async def _one_running_one_queued(
    engine: GenerationModel,
) -> tuple[GenerationScheduler, GenerationStream, GenerationStream]:
    """A started one-row scheduler with a long request running (its first chunk read) and a
    second one queued behind it; the test closes the scheduler."""
    sched = GenerationScheduler(engine, name="one", max_queue=4, max_running=1)
    sched.start()
    running = sched.submit(ids(engine, PROMPTS[0]), LONG)
    queued = sched.submit(ids(engine, PROMPTS[1]), LONG)
    await running.__anext__()
    return sched, running, queued


async def test_closing_the_scheduler_cancels_what_is_left(engine: GenerationModel) -> None:
    sched, running, queued = await _one_running_one_queued(engine)
    await sched.aclose(grace=0.0)
    for stream in (running, queued):
        with pytest.raises(Cancelled):
            await collect(stream)
        assert stream.finish_reason == "cancelled"
    assert sched.active == 0
    assert not engine.has_work()


async def test_grace_lets_running_work_finish(engine: GenerationModel) -> None:
    sched = GenerationScheduler(engine, name="one", max_queue=4, max_running=2)
    sched.start()
    stream = sched.submit(ids(engine, PROMPTS[0]), GREEDY16)
    await sched.aclose(grace=30.0)
    chunks = await collect(stream)
    assert len(tokens(chunks)) == 16
    assert stream.finish_reason == "length"


# -- engine failures ---------------------------------------------------------------------------


class FailingStep:
    """The real engine, with a step that raises once when armed (a fault to recover from)."""

    def __init__(self, engine: GenerationModel) -> None:
        self.engine = engine
        self.armed = threading.Event()
        self.cancelled: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def cancel(self, seq_id: int) -> None:
        self.cancelled.append(seq_id)
        self.engine.cancel(seq_id)

    def step(self) -> list[StepOutput]:
        if self.armed.is_set():
            self.armed.clear()
            raise RuntimeError("device lost")
        return self.engine.step()


async def test_an_engine_failure_fails_the_running_requests_only(engine: GenerationModel) -> None:
    faulty = FailingStep(engine)
    async with scheduling(faulty, name="faulty", max_queue=4, max_running=4) as sched:  # type: ignore[arg-type]
        streams = [sched.submit(ids(engine, p), LONG) for p in PROMPTS[:2]]
        for s in streams:
            await s.__anext__()
        faulty.armed.set()
        for s in streams:
            with pytest.raises(InternalError, match="device lost"):
                await collect(s)
            assert s.request_id in faulty.cancelled
        assert not engine.has_work()
        after = await collect(sched.submit(ids(engine, PROMPTS[2]), GREEDY16))
        assert len(tokens(after)) == 16
        assert sched.stats().errors == 1


async def test_stats_count_the_work(scheduler: GenerationScheduler, engine: GenerationModel) -> None:
    await asyncio.gather(*(alone(scheduler, engine, p, GREEDY16) for p in PROMPTS))
    stats = scheduler.stats()
    assert stats.tokens_generated == 16 * len(PROMPTS)
    assert stats.requests_finished == len(PROMPTS)
    assert 1.0 <= stats.mean_batch_size <= len(PROMPTS)
    assert stats.waiting == stats.running == stats.active == 0


async def test_closing_with_grace_returns_once_idle(engine: GenerationModel) -> None:
    """A cancelled request counts as done: the grace period is not waited out."""
    sched, running, queued = await _one_running_one_queued(engine)
    await queued.aclose()  # still waiting for the row: leaves the queue at once
    await running.aclose()
    await asyncio.wait_for(sched.aclose(grace=600.0), 60)
    assert sched.active == 0
    assert queued.finish_reason == running.finish_reason == "cancelled"
