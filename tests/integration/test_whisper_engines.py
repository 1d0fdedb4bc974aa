"""Whisper engines against transformers' own greedy ``generate`` on the same audio: the tokens
the daemon's engines decode are the oracle's (random weights: garbage, but the same garbage).

The audio goes through the daemon's decoder (``hfd.daemon.audio``, PyAV) from WAV bytes; the
oracle gets the same 16-bit samples as floats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import media_models

from hfd.backends.base import LoadOptions
from hfd.backends.whisper_common import TranscribeOptions
from hfd.daemon import audio

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def whisper_dir() -> Path:
    return media_models.tiny_whisper()


@pytest.fixture(scope="module")
def oracle(whisper_dir: Path) -> Any:
    return media_models.whisper_oracle(whisper_dir)


_wav_and_samples = media_models.tone_wav_and_samples


def test_decoder_reads_16bit_wav_exactly() -> None:
    raw, samples = _wav_and_samples(1.0, 300.0)
    decoded = audio.decode(raw, max_seconds=60)
    assert decoded.dtype == np.float32 and decoded.shape == samples.shape
    np.testing.assert_allclose(decoded, samples, atol=1e-6)


def test_decoder_resamples_other_rates_and_channels() -> None:
    raw = media_models.encode_audio(media_models.tone(1.0, rate=44100), rate=44100, channels=2, fmt="flac")
    decoded = audio.decode(raw, max_seconds=60)
    assert abs(decoded.size - 16000) < 400  # resampled to 16 kHz mono


@pytest.fixture(scope="module")
def torch_engine(whisper_dir: Path) -> Any:
    from hfd.backends import whisper_torch

    return whisper_torch.load(LoadOptions(path=whisper_dir, task="embed", device="cpu"))  # type: ignore[arg-type]


@pytest.mark.parametrize("freq", [220.0, 880.0])
def test_torch_engine_equals_greedy_generate(torch_engine: Any, oracle: Any, freq: float) -> None:
    raw, samples = _wav_and_samples(2.0, freq)
    got = torch_engine.transcribe(audio.decode(raw, max_seconds=60), TranscribeOptions(language="en"))
    assert got.text == oracle(samples, language="en", task="transcribe")
    assert got.text and got.tokens > 0


def test_torch_engine_translate_and_detected_language(torch_engine: Any, oracle: Any) -> None:
    raw, samples = _wav_and_samples(2.0, 500.0)
    got = torch_engine.transcribe(audio.decode(raw, max_seconds=60), TranscribeOptions(task="translate"))
    assert got.text == oracle(samples, task="translate")
    assert got.language is not None


@pytest.mark.slow
def test_openvino_engine_equals_greedy_generate(whisper_dir: Path, oracle: Any, tmp_path: Path) -> None:
    pytest.importorskip("openvino_genai")
    pytest.importorskip("optimum.intel")
    from hfd.backends import whisper_openvino

    cache = media_models.CACHE_ROOT.parent / "whisper-exports"
    engine = whisper_openvino.load(
        LoadOptions(path=whisper_dir, task="embed", device="CPU", cache_dir=cache)  # type: ignore[arg-type]
    )
    for freq in (220.0, 880.0):
        raw, samples = _wav_and_samples(2.0, freq)
        got = engine.transcribe(audio.decode(raw, max_seconds=60), TranscribeOptions(language="en"))
        assert got.text == oracle(samples, language="en", task="transcribe")
