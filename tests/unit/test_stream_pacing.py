"""Stream pacing: a stream's chunks are at least ``stream_interval_ms`` apart, what its steps make
meanwhile goes out together, and nothing is lost or reordered (the scheduler's ``_send`` and
``_finish``, and the OpenVINO engine process's ``openvino_pipe.Pacer``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams, StepOutput
from hfd.backends.openvino_pipe import Pacer
from hfd.backends.registry import get_backend
from hfd.client.errors import InternalError
from hfd.daemon.scheduler.detok_logprobs import TextLogprob
from hfd.daemon.scheduler.generation import GenerationScheduler, GenerationStream, TokenChunk

pytestmark = pytest.mark.anyio

PROMPT = "pacing a stream"
LONG = 10_000.0  # ms: longer than any test's stream, so only the first and the last chunk go out


def fake(tmp_path: Path, **extra: Any) -> GenerationModel:
    return get_backend("fake").load_generator(
        LoadOptions(path=tmp_path, task="generate", threads=1, max_running=4, extra={"step_ms": 1, **extra})
    )


@contextlib.asynccontextmanager
async def scheduling(model: GenerationModel, interval_ms: float) -> AsyncIterator[GenerationScheduler]:
    sched = GenerationScheduler(
        model, name="paced", max_queue=8, max_running=4, stream_interval_ms=interval_ms
    )
    sched.start()
    try:
        yield sched
    finally:
        await sched.aclose()
        model.close()


async def chunks_of(stream: GenerationStream) -> list[TokenChunk]:
    return [chunk async for chunk in stream]


def joined(chunks: Sequence[TokenChunk]) -> tuple[list[int], str]:
    return [t for c in chunks for t in c.token_ids], "".join(c.text for c in chunks)


async def test_a_paced_stream_has_the_same_tokens_and_text_in_fewer_chunks(tmp_path: Path) -> None:
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, logprobs=2)
    results: dict[float, list[TokenChunk]] = {}
    for interval in (0.0, LONG):
        model = fake(tmp_path)
        async with scheduling(model, interval) as sched:
            results[interval] = await chunks_of(sched.submit(model.encode_prompt(PROMPT), params))
    every, paced = results[0.0], results[LONG]
    assert len(every) == 24 and all(len(c.token_ids) == 1 for c in every)
    # The first token at once; everything else was held until the stream's end.
    assert [len(c.token_ids) for c in paced] == [1, 23]
    assert joined(paced) == joined(every)
    assert paced[-1].finish_reason == every[-1].finish_reason == "length"
    # One logprob record per token, in order, across the merged chunk.
    assert [lp for c in paced for lp in c.logprobs or ()] == [lp for c in every for lp in c.logprobs or ()]


async def test_a_held_chunk_goes_out_once_its_interval_is_over(tmp_path: Path) -> None:
    model = fake(tmp_path, step_ms=5)
    async with scheduling(model, 30.0) as sched:
        params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
        chunks = await chunks_of(sched.submit(model.encode_prompt(PROMPT), params))
    sizes = [len(c.token_ids) for c in chunks]
    assert sum(sizes) == 60 and sizes[0] == 1
    # About six 5 ms steps per 30 ms: held chunks went out during the stream, not only at its end.
    assert len(chunks) > 2
    assert max(sizes[1:-1]) > 1


class _Quiet:
    """The fake engine, with a sequence's outputs of steps 3-19 held back and returned together at
    step 20, as an engine's prefill steps have no output for the sequences already decoding."""

    def __init__(self, model: GenerationModel) -> None:
        self._model = model
        self._steps = 0
        self._later: list[StepOutput] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def step(self) -> list[StepOutput]:
        outputs = self._model.step()
        if not outputs:  # woken early (interrupt): not a step
            return outputs
        self._steps += 1
        if 3 <= self._steps < 20:
            self._later += outputs
            return []
        if self._steps == 20:
            merged = [
                StepOutput(o.seq_id, [t for x in self._later for t in x.token_ids]) for o in self._later[:1]
            ]
            self._later = []
            return merged + outputs
        return outputs


async def test_a_held_chunk_goes_out_at_a_step_end_after_its_interval_without_new_output(
    tmp_path: Path,
) -> None:
    model: Any = _Quiet(fake(tmp_path, step_ms=5))
    async with scheduling(model, 20.0) as sched:
        params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        chunks = await chunks_of(sched.submit(model.encode_prompt(PROMPT), params))
    # Step 1's token at once; step 2's held 5 ms, then sent at a silent step's end (steps 3-19
    # take 85 ms), not kept until step 20 brought more.
    assert [len(c.token_ids) for c in chunks][:2] == [1, 1]
    assert sum(len(c.token_ids) for c in chunks) == 24


async def test_tokens_held_before_an_engine_failure_reach_the_reader_before_the_error(tmp_path: Path) -> None:
    model = fake(tmp_path, fail_at_step=8)
    async with scheduling(model, LONG) as sched:
        stream = sched.submit(
            model.encode_prompt(PROMPT), SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)
        )
        got: list[TokenChunk] = []
        with pytest.raises(InternalError):
            async for chunk in stream:
                got.append(chunk)
    # Steps 1-7 made a token each: the first at once, the six held ones before the failure.
    assert [len(c.token_ids) for c in got] == [1, 6]


async def test_a_cancelled_stream_ends_with_what_was_held(tmp_path: Path) -> None:
    model = fake(tmp_path, step_ms=2)
    async with scheduling(model, LONG) as sched:
        stream = sched.submit(
            model.encode_prompt(PROMPT), SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
        )
        first = await stream.__anext__()
        for _ in range(1000):  # until the worker has made (and held) a few more
            if sched.stats().tokens_generated >= 6:
                break
            await anyio.sleep(0.005)
        stream.cancel()
        rest = [chunk async for chunk in stream]
    assert len(first.token_ids) == 1
    assert rest[-1].finish_reason == "cancelled"
    assert sum(len(c.token_ids) for c in rest) >= 5  # the held tokens came with the last chunk


class _SelfPaced:
    """A fake engine that says it paces its own outputs, as OpenVINO's engine process does."""

    def __init__(self, model: GenerationModel) -> None:
        self._model = model
        self.paces_stream = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def step(self) -> list[StepOutput]:
        return self._model.step()


async def test_a_model_that_paces_itself_is_passed_on_as_it_comes(tmp_path: Path) -> None:
    model: Any = _SelfPaced(fake(tmp_path))
    async with scheduling(model, LONG) as sched:
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
        chunks = await chunks_of(sched.submit(model.encode_prompt(PROMPT), params))
    assert [len(c.token_ids) for c in chunks] == [1] * 12


def test_chunks_join_in_order() -> None:
    a, b = TextLogprob("He", -0.1, (72, 101)), TextLogprob("llo", -0.2, (108, 108, 111))
    first = TokenChunk("He", [1], None, [a], [None, a])
    later = TokenChunk("llo", [2], "stop", [b], None, "\n")
    both = first.then(later)
    assert (both.text, both.token_ids, both.finish_reason, both.stop_sequence) == (
        "Hello",
        [1, 2],
        "stop",
        "\n",
    )
    assert both.logprobs == [a, b]
    assert both.prompt_logprobs == [None, a]  # the stream's first chunk's
    assert TokenChunk("a", [1], None).then(TokenChunk("b", [2], None)).logprobs is None


def test_scheduler_refuses_a_negative_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stream_interval_ms"):
        GenerationScheduler(fake(tmp_path), name="x", max_queue=1, max_running=1, stream_interval_ms=-1)


# -- the engine process's pacer ------------------------------------------------------------------


def out(seq_id: int, tokens: list[int], finished: str | None = None) -> list[Any]:
    return [seq_id, tokens, finished, None, None, None]


def test_pacer_sends_a_first_output_at_once_then_holds_until_the_interval() -> None:
    pacer = Pacer(0.010)
    assert pacer.take([out(1, [5])], idle=False, now=100.0) == [out(1, [5])]
    assert pacer.take([out(1, [6])], idle=False, now=100.003) == []
    assert pacer.take([out(1, [7])], idle=False, now=100.006) == []
    assert pacer.take([out(1, [8])], idle=False, now=100.011) == [out(1, [6]), out(1, [7]), out(1, [8])]


def test_pacer_sends_a_newcomer_and_a_finish_at_once_with_everything_held() -> None:
    pacer = Pacer(0.010)
    pacer.take([out(1, [5])], idle=False, now=1.0)
    assert pacer.take([out(1, [6])], idle=False, now=1.001) == []
    # A second sequence's first token goes at once, and carries the first one's held token along.
    assert pacer.take([out(1, [7]), out(2, [9])], idle=False, now=1.002) == [
        out(1, [6]),
        out(1, [7]),
        out(2, [9]),
    ]
    assert pacer.take([out(2, [10])], idle=False, now=1.003) == []
    assert pacer.take([out(2, [11], "stop")], idle=False, now=1.004) == [out(2, [10]), out(2, [11], "stop")]


def test_pacer_flushes_when_the_pipeline_goes_idle_and_forgets_cancelled_sequences() -> None:
    pacer = Pacer(0.010)
    pacer.take([out(1, [5])], idle=False, now=1.0)
    assert pacer.take([out(1, [6])], idle=False, now=1.001) == []
    assert pacer.take([], idle=True, now=1.002) == [out(1, [6])]
    pacer.forget(1)  # cancelled: a later sequence with its id is new again
    assert pacer.take([out(1, [3])], idle=False, now=1.003) == [out(1, [3])]
    assert Pacer(0.0).take([out(4, [1]), out(4, [2])], idle=False, now=0.0) == [out(4, [1]), out(4, [2])]
