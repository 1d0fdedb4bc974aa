"""Uploads already at 16 kHz mono skip FFmpeg's resampler: their samples equal, to the bit, what
the resampler gives for the same file (s16, s32 and float PCM; FLAC; MP3), and other rates
and layouts still go through it."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from hfd.daemon import audio

av = pytest.importorskip("av", reason="PyAV decodes uploads")


def _encode(codec: str, fmt: str, rate: int = 16000, layout: str = "mono", seconds: float = 2.5) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * np.sin(2 * np.pi * 4111 * t)).astype(np.float32)
    channels = 1 if layout == "mono" else 2
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(wave[None, :], channels, axis=0), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("codec", "fmt"),
    [
        ("pcm_s16le", "wav"),
        ("pcm_s32le", "wav"),
        ("pcm_f32le", "wav"),
        ("flac", "flac"),
        ("libmp3lame", "mp3"),
    ],
)
def test_16khz_mono_equals_the_resampler_to_the_bit(
    codec: str, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _encode(codec, fmt)
    fast = audio.decode(raw, max_seconds=60)
    with av.open(io.BytesIO(raw)) as container:  # the case under test: no resampler needed
        first = next(container.decode(container.streams.audio[0]))
        assert audio._direct(first) is not None
    monkeypatch.setattr(audio, "_direct", lambda frame: None)
    slow = audio.decode(raw, max_seconds=60)
    assert fast.dtype == slow.dtype == np.float32 and fast.shape == slow.shape
    assert np.array_equal(fast, slow)


@pytest.mark.parametrize(("rate", "layout"), [(44100, "mono"), (16000, "stereo")])
def test_other_rates_and_layouts_are_resampled(rate: int, layout: str) -> None:
    raw = _encode("pcm_s16le", "wav", rate=rate, layout=layout)
    with av.open(io.BytesIO(raw)) as container:
        assert audio._direct(next(container.decode(container.streams.audio[0]))) is None
    decoded = audio.decode(raw, max_seconds=60)
    assert abs(decoded.size - 40000) < 400 and decoded.dtype == np.float32


def test_the_duration_bound_holds_on_the_direct_path() -> None:
    with pytest.raises(audio.InvalidRequest) as exc:
        audio.decode(_encode("pcm_s16le", "wav", seconds=3.0), max_seconds=2.0)
    assert exc.value.param == "file"
