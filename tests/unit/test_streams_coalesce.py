"""A generation stream whose reader fell behind hands it the waiting chunks as one: every token in
order, the text joined, the end kept; a reader that keeps up gets one chunk per delivery. On the
fake engine (no torch needed), through the real scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams
from hfd.backends.registry import get_backend
from hfd.client.errors import InternalError
from hfd.daemon.scheduler.detok_logprobs import TextLogprob
from hfd.daemon.scheduler.generation import GenerationScheduler, GenerationStream, TokenChunk
from hfd.daemon.scheduler.streams import coalesce, deliver

pytestmark = pytest.mark.anyio

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GenerationModel]:
    model = get_backend("fake").load_generator(
        LoadOptions(path=tmp_path_factory.mktemp("fake"), task="generate", threads=1, max_running=4,
                    max_batched_tokens=512, extra={"step_ms": 1})
    )  # fmt: skip
    yield model
    model.close()


async def _read_all(stream: GenerationStream) -> list[TokenChunk]:
    return [chunk async for chunk in stream]


async def _until_finished(stream: GenerationStream) -> None:
    for _ in range(5000):
        if stream.finished:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the generation did not finish")


async def test_a_reader_that_fell_behind_gets_every_token_in_one_chunk(engine: GenerationModel) -> None:
    prompt = engine.encode_prompt("The quick brown fox")
    sched = GenerationScheduler(engine, name="fake", max_queue=4, max_running=4)
    sched.start()
    try:
        eager = await _read_all(sched.submit(prompt, GREEDY))
        late = sched.submit(prompt, GREEDY)
        await _until_finished(late)  # every chunk is waiting now: the reader is behind
        behind = await _read_all(late)
    finally:
        await sched.aclose()
    assert len(eager) > 1  # the engine sent chunk by chunk: the late reader's one chunk is coalesced
    assert len(behind) == 1
    assert behind[0].token_ids == [t for c in eager for t in c.token_ids]
    assert len(behind[0].token_ids) == GREEDY.max_tokens
    assert behind[0].text == "".join(c.text for c in eager)
    assert behind[0].finish_reason == eager[-1].finish_reason == "length"
    assert late.completion_tokens == GREEDY.max_tokens


async def test_a_reader_that_keeps_up_gets_each_delivery_alone(engine: GenerationModel) -> None:
    sched = GenerationScheduler(engine, name="fake", max_queue=4, max_running=4)  # not started
    stream = GenerationStream(sched, 1, 3)
    got = []
    for i, piece in enumerate(("a", "b", "c")):
        deliver([(stream, TokenChunk(piece, [10 + i], "stop" if piece == "c" else None))])
        got.append(await stream.__anext__())
    assert [(c.text, c.token_ids) for c in got] == [("a", [10]), ("b", [11]), ("c", [12])]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_an_error_behind_waiting_chunks_is_raised_after_them(engine: GenerationModel) -> None:
    sched = GenerationScheduler(engine, name="fake", max_queue=4, max_running=4)  # not started
    stream = GenerationStream(sched, 1, 3)
    deliver([(stream, TokenChunk("a", [10], None)), (stream, TokenChunk("b", [11], None)),
             (stream, InternalError("the engine failed"))])  # fmt: skip
    await asyncio.sleep(0)  # the hand-off runs on the loop
    await asyncio.sleep(0)
    first = await stream.__anext__()
    assert (first.text, first.token_ids, first.finish_reason) == ("ab", [10, 11], None)
    with pytest.raises(InternalError):
        await stream.__anext__()


def test_coalesce_keeps_one_logprob_per_token_and_the_ends() -> None:
    lp = TextLogprob("x", -0.5, (120,))
    prompt = [None, TextLogprob("p", -1.0, (112,))]
    merged = coalesce([
        TokenChunk("x", [1], None, [lp], prompt),
        TokenChunk("yz", [2, 3], None, [lp, None]),
        TokenChunk("", [4], "stop", [lp], None, "END"),
    ])  # fmt: skip
    assert merged.text == "xyz"
    assert merged.token_ids == [1, 2, 3, 4]
    assert merged.logprobs == [lp, lp, None, lp]
    assert merged.prompt_logprobs == prompt
    assert (merged.finish_reason, merged.stop_sequence) == ("stop", "END")
    without = coalesce([TokenChunk("a", [1], None), TokenChunk("b", [2], None)])
    assert without.logprobs is None and without.prompt_logprobs is None
