"""Whisper word timestamps on the torch engine equal transformers' pipeline with
``return_timestamps="word"``, greedy, on the same tiny model and audio (words and times); the
engines and requests that cannot give them are refused naming why."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch", reason="the torch Whisper engine")
pytest.importorskip("transformers", reason="transformers' pipeline is the oracle")

from support import media_models
from support.media_models import tiny_whisper, tone
from support.whisper_words import pipeline_words

from hfd.backends import whisper_torch
from hfd.backends.base import LoadOptions
from hfd.backends.whisper_common import TranscribeOptions, refuse_words
from hfd.client.errors import InvalidRequest


def _oracle(audio: Any) -> list[tuple[str, float, float]]:
    return pipeline_words(tiny_whisper(), audio)


def _spoken(text: str) -> Any:
    if not media_models.espeak_available():
        pytest.skip("espeak-ng is not installed (scripts/setup --dev installs it)")
    from hfd.daemon import audio

    return audio.decode(media_models.espeak_wav(text), max_seconds=60)


@pytest.fixture(scope="module")
def engine() -> whisper_torch.TorchWhisper:
    return whisper_torch.load(LoadOptions(path=tiny_whisper(), task="transcribe"))


# The random model's cross-attention makes torch.std warn inside transformers' alignment (DTW).
@pytest.mark.filterwarnings("ignore:std\\(\\)")
@pytest.mark.parametrize(
    "source",
    [
        "tone:2.0",
        "tone:7.5",
        "The quick brown fox jumps over the lazy dog.",
        "Seven silver swans swam south.",
    ],
)
def test_torch_word_times_equal_the_pipelines(engine: whisper_torch.TorchWhisper, source: str) -> None:
    audio = tone(float(source[5:]), freq=330.0) if source.startswith("tone:") else _spoken(source)
    got = engine.transcribe(audio, TranscribeOptions(language="en", words=True))
    assert got.words is not None and len(got.words) >= 2
    assert [(w.word, w.start, w.end) for w in got.words] == _oracle(audio)
    # In order and each word's start before its end; a random model's cross-attention may
    # align its last tokens into the padding of the 30 s window, past the audio's end.
    assert all(0.0 <= w.start <= w.end <= 30.0 for w in got.words)
    assert [w.start for w in got.words] == sorted(w.start for w in got.words)
    assert engine.transcribe(audio, TranscribeOptions(language="en")).words is None


def test_long_audio_and_other_engines_are_refused_by_name(engine: whisper_torch.TorchWhisper) -> None:
    with pytest.raises(InvalidRequest) as exc:
        engine.transcribe(tone(31.0), TranscribeOptions(words=True))
    assert exc.value.param == "timestamp_granularities"
    with pytest.raises(InvalidRequest) as exc:
        refuse_words("openvino", TranscribeOptions(words=True))
    assert exc.value.param == "timestamp_granularities" and "openvino" in str(exc.value)
    refuse_words("openvino", TranscribeOptions())
