"""What a speech-recognition engine offers, and the plain data that crosses that seam.

A ``SpeechModel`` takes 16 kHz mono float32 samples (``hfd.daemon.audio`` decodes uploads into
them) and returns a ``Transcript``: the text, and segments with start and end times when asked
for, and words with theirs (``TranscribeOptions.words``; ``check_words`` says which requests
an engine refuses them). Engines: ``whisper_torch`` (transformers' ``WhisperForConditionalGeneration.generate``,
greedy unless a temperature is given) and ``whisper_openvino`` (OpenVINO GenAI's
``WhisperPipeline``). Both chunk long audio into Whisper's 30 s windows themselves
(transformers' sequential long-form generation; GenAI's own chunking).

Engine calls run on the media scheduler's worker thread, one call at a time per model. An
engine that decodes several requests in one call is a ``BatchedSpeechModel`` (torch: one
batched ``generate`` over their windows); GenAI 2026.4's ``WhisperPipeline.generate`` takes one
audio input per call, so the OpenVINO engine serves one request per call.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from hfd.client.errors import HfdError, InvalidRequest

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0  # Whisper's input window
SpeechTask = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class TranscribeOptions:
    task: SpeechTask = "transcribe"
    language: str | None = None  # an ISO code ("en"); None: the model detects it
    prompt: str | None = None  # text of a previous window, as OpenAI's ``prompt``
    temperature: float = 0.0  # 0: greedy
    timestamps: bool = False  # segment start/end times
    words: bool = False  # word start/end times (verbose_json's ``words``)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float  # seconds of audio
    language: str | None = None
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    tokens: int = 0  # tokens generated (usage)
    words: tuple[Word, ...] | None = None  # None: not asked for


def check_words(engine: str, options: TranscribeOptions, duration: float, aligned: bool) -> None:
    """The 400s of word times an engine cannot give: audio past one window, or a model whose
    generation config names no ``alignment_heads`` (``aligned``), naming the field."""
    if not options.words:
        return
    if duration > WINDOW_SECONDS:
        raise InvalidRequest(
            f"word timestamps need audio of at most {WINDOW_SECONDS:.0f} s on the {engine} engine",
            param="timestamp_granularities",
        )
    if not aligned:
        raise InvalidRequest(
            "this model's generation_config.json has no alignment_heads, which word timestamps need",
            param="timestamp_granularities",
        )


class SpeechModel(Protocol):
    """A loaded speech-recognition model."""

    @property
    def multilingual(self) -> bool: ...

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript: ...

    def memory_bytes(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class BatchedSpeechModel(SpeechModel, Protocol):
    """A speech model that transcribes several requests in one call."""

    max_batch: int  # requests one call takes at most

    def batch_key(self, audio: np.ndarray, options: TranscribeOptions) -> Hashable | None:
        """Requests with equal keys may share a call; None: this one runs alone."""
        ...

    def transcribe_batch(self, items: list[tuple[np.ndarray, TranscribeOptions]]) -> list[Transcript | HfdError]:  # fmt: skip
        """One result per item, in order; a refused item's result is its error."""
        ...


def language_code(value: str | None) -> str | None:
    """``"en"``, ``"<|en|>"`` or ``"english"`` -> ``"en"``; None stays None."""
    if value is None:
        return None
    text = value.strip().lower().removeprefix("<|").removesuffix("|>")
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE
    except Exception:  # transformers is optional for the OpenVINO engine
        return text
    if text in LANGUAGES:
        return text
    return TO_LANGUAGE_CODE.get(text, text)


def known_language(code: str) -> bool:
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES
    except Exception:
        return True
    return code in LANGUAGES
