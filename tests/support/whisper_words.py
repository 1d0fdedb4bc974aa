"""The oracle of Whisper word timestamps: transformers' speech-recognition pipeline with
``return_timestamps="word"``, greedy (its own generation config searches 5 beams; hfd's engines
decode greedily at temperature 0), on 16 kHz samples."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any


@cache
def _pipeline(path: Path) -> Any:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline

    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    processor = WhisperProcessor.from_pretrained(path)
    return pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
    )


def pipeline_words(path: Path, samples: Any, language: str = "en") -> list[tuple[str, float, float]]:
    """``(word, start, end)`` per word, as the pipeline gives them (leading spaces kept)."""
    kwargs = {"task": "transcribe", "language": language, "num_beams": 1, "do_sample": False}
    out = _pipeline(path)(samples.copy(), return_timestamps="word", generate_kwargs=kwargs)
    return [(c["text"], float(c["timestamp"][0]), float(c["timestamp"][1])) for c in out["chunks"]]
