"""Whisper on torch: ``WhisperForConditionalGeneration.generate``, greedy unless a temperature
is asked for (transformers' speech-recognition pipeline defaults to 5-beam search; the model's
own ``generate`` with ``num_beams=1, do_sample=False`` is what OpenAI's temperature 0 means).

Audio over 30 s goes to ``generate`` whole: transformers then runs Whisper's sequential
long-form decoding (30 s windows, each starting where the last timestamp ended), which needs
timestamps on. One request at a time (the model's worker thread); batching concurrent requests
is not done yet.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import _hf
from hfd.backends.base import LoadOptions
from hfd.backends.whisper_common import (
    SAMPLE_RATE,
    WINDOW_SECONDS,
    Segment,
    TranscribeOptions,
    Transcript,
    Word,
    check_words,
    known_language,
)
from hfd.client.errors import InvalidRequest

log = logging.getLogger(__name__)


class TorchWhisper:
    def __init__(self, model: Any, processor: Any, device: Any) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self._dtype = next(model.parameters()).dtype
        # Seconds per encoder frame, for word times (the ASR pipeline's time_precision).
        self._precision = processor.feature_extractor.chunk_length / model.config.max_source_positions

    @property
    def multilingual(self) -> bool:
        return bool(getattr(self.model.generation_config, "is_multilingual", False))

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        import torch

        duration = len(audio) / SAMPLE_RATE
        long_form = duration > WINDOW_SECONDS
        fe = self.processor.feature_extractor
        if long_form:  # whole, padded to the longest: generate windows it itself
            feats = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                       padding="longest", return_attention_mask=True)  # fmt: skip
        else:
            feats = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        features = feats.input_features.to(self.device, self._dtype)
        kwargs: dict[str, Any] = {"num_beams": 1, "task": options.task}
        if options.temperature > 0:
            kwargs.update(do_sample=True, temperature=options.temperature)
        else:
            kwargs["do_sample"] = False
        if self.multilingual:
            if options.language is not None:
                if not known_language(options.language):
                    raise InvalidRequest(f"unknown language {options.language!r}", param="language")
                kwargs["language"] = options.language
        else:
            kwargs.pop("task")  # an English-only model takes neither
        if options.prompt:
            kwargs["prompt_ids"] = torch.tensor(
                self.processor.tokenizer.get_prompt_ids(options.prompt), device=self.device
            )
        timestamps = options.timestamps or long_form or options.words  # words: as the pipeline asks
        check_words(
            "torch", options, duration, bool(getattr(self.model.generation_config, "alignment_heads", None))
        )
        if long_form or options.words:
            kwargs["attention_mask"] = feats.attention_mask.to(self.device)
        with torch.inference_mode():
            language = options.language
            if language is None and self.multilingual:
                language = self._detect_language(features)
            if options.words:  # cross-attention alignment (DTW), as transformers' pipeline does
                kwargs["return_token_timestamps"] = True
            dicts = timestamps or options.words
            out = self.model.generate(
                features, return_timestamps=timestamps, return_segments=timestamps,
                return_dict_in_generate=dicts, **kwargs,
            )  # fmt: skip
        tokenizer = self.processor.tokenizer
        if dicts:
            sequences = out["sequences"] if isinstance(out, dict) else out.sequences
            segments = _segments(out, tokenizer) if timestamps else ()
        else:
            sequences = out
            segments = ()
        ids = [int(t) for t in sequences[0].tolist()]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        words = _words(out, tokenizer, self._precision) if options.words else None
        return Transcript(
            text=text, duration=duration, language=language, segments=segments, tokens=len(ids), words=words
        )

    def _detect_language(self, features: Any) -> str | None:
        try:
            ids = self.model.detect_language(features[:, :, :3000])
            token = self.processor.tokenizer.convert_ids_to_tokens(int(ids[0]))
            return str(token).removeprefix("<|").removesuffix("|>")
        except Exception as exc:  # a model without language tokens: leave it unsaid
            log.debug("language detection failed", extra={"error": str(exc)})
            return None

    def memory_bytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))

    def close(self) -> None:
        self.model = None


def _segments(out: Any, tokenizer: Any) -> tuple[Segment, ...]:
    raw = out.get("segments") if isinstance(out, dict) else getattr(out, "segments", None)
    if not raw:
        return ()
    found = []
    for seg in raw[0]:
        tokens = [int(t) for t in seg["tokens"].tolist()]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        found.append(
            Segment(start=float(seg["start"]), end=float(seg["end"]), text=text, tokens=tuple(tokens))
        )
    return tuple(found)


def _words(out: Any, tokenizer: Any, time_precision: float) -> tuple[Word, ...]:
    """Words with start and end times exactly as transformers' ASR pipeline gives them for
    ``return_timestamps="word"``: the same generate output handed to the tokenizer's own
    decoding (``_decode_asr``), which groups tokens into words (spaces, or characters for
    languages written without them; punctuation joined) within each timestamped chunk."""
    import torch

    segments = out.get("segments") if isinstance(out, dict) else None
    if segments:
        times = [torch.cat([seg["token_timestamps"] for seg in segments[0]])]
    else:
        times = out["token_timestamps"]
    decoded = [{"tokens": out["sequences"].cpu().numpy(), "token_timestamps": times}]
    _, found = tokenizer._decode_asr(
        decoded, return_timestamps="word", return_language=False, time_precision=time_precision
    )
    return tuple(
        Word(word=str(c["text"]), start=float(c["timestamp"][0]), end=float(c["timestamp"][1]))
        for c in found.get("chunks", [])
    )


def load(opts: LoadOptions) -> TorchWhisper:
    """A Whisper snapshot on torch (local files only, safetensors unless pickle is allowed)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from hfd.backends.torch_backend import _from_pretrained, _prepare

    _hf.require_model_dir(opts.path)
    device, dtype = _prepare(opts)
    model = _from_pretrained(WhisperForConditionalGeneration, opts, device, dtype)
    processor = WhisperProcessor.from_pretrained(Path(opts.path), local_files_only=True)
    return TorchWhisper(model, processor, device)
