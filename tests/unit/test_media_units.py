"""The pieces of speech recognition and image embeddings that need no model: response formats,
request options, the media scheduler's queue bound and its cancelled waiters."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from hfd.backends.whisper_common import Segment, Transcript, Word, language_code
from hfd.client.errors import InvalidRequest, Overloaded
from hfd.daemon import audio_formats
from hfd.daemon.media_worker import MediaScheduler
from hfd.daemon.schema import parse
from hfd.daemon.transcribe import TranscriptionRequest, TranslationRequest, options

T = Transcript(
    text=" hello there. general kenobi",
    duration=3725.5,
    language="en",
    segments=(Segment(0.0, 1.5, " hello there."), Segment(3723.25, 3725.5, " general kenobi")),
)


def test_srt_and_vtt_clock_and_numbering() -> None:
    assert audio_formats.srt(T) == (
        "1\n00:00:00,000 --> 00:00:01,500\nhello there.\n\n2\n01:02:03,250 --> 01:02:05,500\ngeneral kenobi\n"
    )
    assert audio_formats.vtt(T).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello there.\n")


def test_untimed_transcript_is_one_segment_spanning_the_audio() -> None:
    body = audio_formats.render(Transcript(text="hi", duration=2.0), "verbose_json", "translate")
    assert isinstance(body, dict)
    assert body["task"] == "translate" and body["language"] == "unknown"
    assert [(s["start"], s["end"], s["text"]) for s in body["segments"]] == [(0.0, 2.0, "hi")]
    assert "words" not in body
    timed = Transcript(text=" hi you", duration=2.0, words=(Word(" hi", 0.1234, 0.5), Word(" you", 0.5, 1.0)))
    words = audio_formats.render(timed, "verbose_json", "transcribe")
    assert isinstance(words, dict)
    assert words["words"] == [
        {"word": "hi", "start": 0.123, "end": 0.5},
        {"word": "you", "start": 0.5, "end": 1.0},
    ]
    assert audio_formats.render(T, "json", "transcribe") == {"text": T.text}
    assert audio_formats.render(T, "text", "transcribe") == T.text


def _req(cls: Any = TranscriptionRequest, **fields: Any) -> Any:
    return parse(cls, {"model": "w", "file": b"x", **fields})


def test_options_from_request() -> None:
    pytest.importorskip("transformers", reason="language names are read from transformers' Whisper tables")
    o = options(_req(language="English", response_format="srt"))
    assert o.language == "en" and o.timestamps and o.task == "transcribe"
    t = options(_req(TranslationRequest, language="fr"))
    assert t.task == "translate" and t.language is None  # translations take no language
    assert options(_req(timestamp_granularities=["segment"])).timestamps
    with pytest.raises(InvalidRequest) as e:  # OpenAI's rule: only verbose_json carries words
        options(_req(timestamp_granularities=["word"]))
    assert e.value.param == "timestamp_granularities"
    w = options(_req(response_format="verbose_json", timestamp_granularities=["word"]))
    assert w.words and not w.timestamps
    both = options(_req(response_format="verbose_json", timestamp_granularities=["word", "segment"]))
    assert both.words and both.timestamps
    assert not options(_req(response_format="verbose_json")).words
    assert language_code("<|de|>") == "de"


@pytest.mark.anyio
async def test_media_scheduler_bounds_its_queue_and_drops_cancelled_waiters() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def work(i: int) -> int:
        calls.append(i)
        gate.wait(10)
        return i

    s = MediaScheduler(object(), name="m", max_queue=2)
    s.start()
    results: list[int] = []
    async with anyio.create_task_group() as tg:

        async def first() -> None:
            results.append(await s.run(work, 1))

        tg.start_soon(first)
        await anyio.sleep(0.05)
        waiter = anyio.CancelScope()

        async def second() -> None:
            with waiter:
                await s.run(work, 2)

        tg.start_soon(second)
        await anyio.sleep(0.05)
        with pytest.raises(Overloaded):
            await s.run(work, 3)
        waiter.cancel()  # its client went away while it waited
        await anyio.sleep(0.05)
        gate.set()
    assert results == [1] and calls == [1]
    assert s.stats().dropped == 1 and s.stats().requests_rejected == 1
    await s.aclose()
