"""The torch Whisper engine's batched call: several requests' windows decoded in one
``generate`` give each request exactly what it gets alone (text, language, segments and their
tokens, usage), for every option the batch key lets share a call; the one-at-a-time
results are transformers' greedy ``generate`` (tests/integration/test_whisper_engines.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the torch Whisper engine")
pytest.importorskip("transformers", reason="the torch Whisper engine")

from support.media_models import tiny_whisper, tone

from hfd.backends import whisper_torch
from hfd.backends.base import LoadOptions
from hfd.backends.whisper_common import BatchedSpeechModel, TranscribeOptions
from hfd.client.errors import InvalidRequest


@pytest.fixture(scope="module")
def engine() -> whisper_torch.TorchWhisper:
    return whisper_torch.load(LoadOptions(path=tiny_whisper(), task="transcribe"))


def _noise(seed: int) -> Any:
    return (0.3 * np.random.default_rng(seed).standard_normal(40000)).astype(np.float32)


@pytest.fixture(scope="module")
def early_end() -> whisper_torch.TorchWhisper:
    """The tiny model with the first token it says on noise other than its usual one made its
    end of text: that row ends early, so a batch pads it after its end (pad != eos here)."""
    engine = whisper_torch.load(LoadOptions(path=tiny_whisper(), task="transcribe"))
    config = engine.model.generation_config
    plain = engine.model.generate(
        engine.processor.feature_extractor(_noise(0), sampling_rate=16000, return_tensors="pt").input_features,
        language="en", num_beams=1, do_sample=False,
    )[0].tolist()  # fmt: skip
    usual = max(set(plain), key=plain.count)
    config.eos_token_id = next(t for t in plain[4:] if t != usual)
    assert config.eos_token_id != config.pad_token_id
    return engine


def _audios() -> list[Any]:
    return [tone(2.0, freq=220.0), _noise(0), tone(29.5, freq=500.0)]


@pytest.mark.parametrize(
    "options",
    [
        TranscribeOptions(language="en"),
        TranscribeOptions(),  # the language detected per request
        TranscribeOptions(language="en", timestamps=True),
        TranscribeOptions(language="en", prompt="so far"),
    ],
    ids=["plain", "detect", "segments", "prompt"],
)
def test_one_batched_call_equals_each_request_alone(
    early_end: whisper_torch.TorchWhisper, options: Any
) -> None:
    audios = _audios()
    alone = [early_end.transcribe(a, options) for a in audios]
    keys = {early_end.batch_key(a, options) for a in audios}
    assert len(keys) == 1 and None not in keys
    batched = early_end.transcribe_batch([(a, options) for a in audios])
    assert batched == alone
    if options == TranscribeOptions(language="en"):
        assert len({t.tokens for t in alone}) > 1  # a row that ended early, padded in the batch


def test_what_runs_alone_and_refusals_in_a_batch(engine: whisper_torch.TorchWhisper) -> None:
    assert isinstance(engine, BatchedSpeechModel)
    assert engine.batch_key(tone(31.0), TranscribeOptions()) is None  # long-form decoding: alone
    assert engine.batch_key(tone(2.0), TranscribeOptions(temperature=0.5)) is None  # sampled: alone
    # Word times: transformers' alignment normalises over the batch's padded length; alone.
    assert engine.batch_key(tone(2.0), TranscribeOptions(language="en", words=True)) is None
    plain = TranscribeOptions(language="en")
    assert engine.batch_key(tone(2.0), plain) != engine.batch_key(tone(2.0), TranscribeOptions(language="de"))
    bad = TranscribeOptions(language="xx")
    results = engine.transcribe_batch([(tone(2.0), bad), (tone(3.0), bad)])
    assert all(isinstance(r, InvalidRequest) and r.param == "language" for r in results)
