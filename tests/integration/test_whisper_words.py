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
from hfd.backends.whisper_common import TranscribeOptions, check_words
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
        check_words("openvino", TranscribeOptions(words=True), 31.0, aligned=True)
    assert exc.value.param == "timestamp_granularities" and "openvino" in str(exc.value)
    with pytest.raises(InvalidRequest) as exc:  # no alignment_heads in the model's config
        check_words("openvino", TranscribeOptions(words=True), 2.0, aligned=False)
    assert exc.value.param == "timestamp_granularities" and "alignment_heads" in str(exc.value)
    check_words("openvino", TranscribeOptions(), 31.0, aligned=False)


def _torch_untimed_words(audio: Any) -> list[tuple[str, float, float]]:
    """Word times from transformers' generate with token timestamps but no timestamp tokens
    (GenAI decodes words that way; the pipeline turns timestamp tokens on, which changes a
    random model's text), grouped by the tokenizer's ASR decoding."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper()).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper())
    feats = processor.feature_extractor(
        audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True
    )
    with torch.inference_mode():
        out = model.generate(
            feats.input_features, attention_mask=feats.attention_mask, return_token_timestamps=True,
            return_dict_in_generate=True, num_beams=1, do_sample=False, language="en", task="transcribe",
        )  # fmt: skip
    decoded = [{"tokens": out["sequences"].numpy(), "token_timestamps": out["token_timestamps"]}]
    _, found = processor.tokenizer._decode_asr(
        decoded, return_timestamps="word", return_language=False, time_precision=0.02
    )
    return [(str(c["text"]), float(c["timestamp"][0]), float(c["timestamp"][1])) for c in found["chunks"]]


# Measured on the tiny model (f32 CPU): equal times on the 2 s tone and the spoken sentence,
# 0.32 s apart on the 7.5 s tone's last word end. Both align the same cross-attention by DTW
# over 20 ms frames, but GenAI normalises and filters the attention weights in its own code,
# so on a random model, whose attention is flat, the warping path may shift by several frames.
OPENVINO_TOLERANCE_S = 0.4


@pytest.mark.filterwarnings("ignore:std\\(\\)")
@pytest.mark.parametrize("source", ["tone:2.0", "tone:7.5", "The quick brown fox jumps over the lazy dog."])
def test_openvino_words_equal_torch_alignment(source: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("openvino_genai")
    pytest.importorskip("optimum.intel")
    from hfd.backends import whisper_openvino

    audio = tone(float(source[5:]), freq=330.0) if source.startswith("tone:") else _spoken(source)
    cache = tmp_path_factory.getbasetemp() / "whisper-words-ov"
    engine = whisper_openvino.load(
        LoadOptions(path=tiny_whisper(), task="transcribe", device="CPU", cache_dir=cache)
    )
    assert engine.aligned
    got = engine.transcribe(audio, TranscribeOptions(language="en", words=True))
    want = _torch_untimed_words(audio)
    assert got.words is not None
    assert [w.word.strip() for w in got.words] == [t.strip() for t, _, _ in want]
    for w, (_, start, end) in zip(got.words, want, strict=True):
        assert w.start == pytest.approx(start, abs=OPENVINO_TOLERANCE_S)
        assert w.end == pytest.approx(end, abs=OPENVINO_TOLERANCE_S)
    assert engine.transcribe(audio, TranscribeOptions(language="en")).words is None
