"""Whisper on torch: ``WhisperForConditionalGeneration.generate``, greedy unless a temperature
is asked for (transformers' speech-recognition pipeline defaults to 5-beam search; the model's
own ``generate`` with ``num_beams=1, do_sample=False`` is what OpenAI's temperature 0 means).

Audio over 30 s goes to ``generate`` whole: transformers then runs Whisper's sequential
long-form decoding (30 s windows, each starting where the last timestamp ended), which needs
timestamps on.

Batching: requests with equal options and audio within one 30 s window (``batch_key``) are
decoded together (``transcribe_batch``: their features stacked, one greedy ``generate``), on the
media scheduler's batch hook; each row is trimmed to its own end of text, so every request gets
what it gets alone (text, segments, usage). Long audio, sampled requests and word times run
alone (``batch_key`` says why).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
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
from hfd.client.errors import HfdError, InvalidRequest

log = logging.getLogger(__name__)


class TorchWhisper:
    max_batch = 64  # requests one call takes at most (the setting audio_max_batch bounds it lower)

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
        found = self.transcribe_batch([(audio, options)])[0]
        if isinstance(found, HfdError):
            raise found
        return found

    def batch_key(self, audio: np.ndarray, options: TranscribeOptions) -> Hashable | None:
        """Requests with equal options and audio within one window go into one ``generate``.
        Alone: long audio (sequential long-form decoding), sampling, and word times (transformers
        aligns each row's cross-attention over the batch's padded output length, normalised
        across it, so a shorter row's word times would move)."""
        if len(audio) / SAMPLE_RATE > WINDOW_SECONDS or options.temperature > 0 or options.words:
            return None
        return options

    def transcribe_batch(self, items: list[tuple[np.ndarray, TranscribeOptions]]) -> list[Transcript | HfdError]:  # fmt: skip
        """Each item's transcript, the items' windows decoded in one batched ``generate``; they
        share one ``batch_key`` (equal options, each within 30 s) or there is one item. A
        refused item's result is its error."""
        import torch

        options = items[0][1]
        durations = [len(audio) / SAMPLE_RATE for audio, _ in items]
        long_form = durations[0] > WINDOW_SECONDS
        assert len(items) == 1 or (not long_form and all(o == options for _, o in items))
        try:
            kwargs = self._generate_options(options, durations[0])
        except HfdError as exc:
            return [exc for _ in items]
        fe = self.processor.feature_extractor
        audios = [audio for audio, _ in items]
        if long_form:  # whole, padded to the longest: generate windows it itself
            feats = fe(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                       padding="longest", return_attention_mask=True)  # fmt: skip
        else:
            feats = fe(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        features = feats.input_features.to(self.device, self._dtype)
        timestamps = options.timestamps or long_form or options.words  # words: as the pipeline asks
        if long_form or options.words:
            kwargs["attention_mask"] = feats.attention_mask.to(self.device)
        with torch.inference_mode():
            languages = [options.language] * len(items)
            if options.language is None and self.multilingual:
                languages = self._detect_language(features)
            if options.words:  # cross-attention alignment (DTW), as transformers' pipeline does
                kwargs["return_token_timestamps"] = True
            out = self.model.generate(
                features, return_timestamps=timestamps, return_segments=timestamps,
                return_dict_in_generate=timestamps, **kwargs,
            )  # fmt: skip
        sequences = (out["sequences"] if isinstance(out, dict) else out.sequences) if timestamps else out
        tokenizer = self.processor.tokenizer
        found: list[Transcript | HfdError] = []
        for row, duration in enumerate(durations):
            ids = [int(t) for t in sequences[row].tolist()]
            if len(items) > 1:
                ids = self._trim(ids)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            segments = _segments(out, row, tokenizer) if timestamps else ()
            words = _words(out, row, len(ids), tokenizer, self._precision) if options.words else None
            found.append(Transcript(text, duration, languages[row], segments, len(ids), words))
        return found

    def _generate_options(self, options: TranscribeOptions, duration: float) -> dict[str, Any]:
        """``generate``'s keywords for ``options`` (greedy unless sampled), after its checks."""
        import torch

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
        check_words(
            "torch", options, duration, bool(getattr(self.model.generation_config, "alignment_heads", None))
        )
        return kwargs

    def _trim(self, ids: list[int]) -> list[int]:
        """A row of a batched output as that request alone gives it: up to its first end of
        text, without the padding that rows which ended sooner carry."""
        config = self.model.generation_config
        if config.eos_token_id in ids:
            ids = ids[: ids.index(config.eos_token_id) + 1]
        while ids and ids[-1] == config.pad_token_id and config.pad_token_id != config.eos_token_id:
            ids.pop()
        return ids

    def _detect_language(self, features: Any) -> list[str | None]:
        """Each row's language, as ``generate`` detects it (the first window)."""
        try:
            ids = self.model.detect_language(features[:, :, :3000])
            tokens = self.processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
            return [str(token).removeprefix("<|").removesuffix("|>") for token in tokens]
        except Exception as exc:  # a model without language tokens: leave it unsaid
            log.debug("language detection failed", extra={"error": str(exc)})
            return [None] * len(features)

    def memory_bytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))

    def close(self) -> None:
        self.model = None


def _segments(out: Any, row: int, tokenizer: Any) -> tuple[Segment, ...]:
    raw = out.get("segments") if isinstance(out, dict) else getattr(out, "segments", None)
    if not raw:
        return ()
    found = []
    for seg in raw[row]:
        tokens = [int(t) for t in seg["tokens"].tolist()]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        found.append(
            Segment(start=float(seg["start"]), end=float(seg["end"]), text=text, tokens=tuple(tokens))
        )
    return tuple(found)


def _words(out: Any, row: int, length: int, tokenizer: Any, time_precision: float) -> tuple[Word, ...]:
    """Words with start and end times exactly as transformers' ASR pipeline gives them for
    ``return_timestamps="word"``: the same generate output handed to the tokenizer's own
    decoding (``_decode_asr``), which groups tokens into words (spaces, or characters for
    languages written without them; punctuation joined) within each timestamped chunk. ``row``:
    the request's row of a batched output, its first ``length`` tokens."""
    import torch

    segments = out.get("segments") if isinstance(out, dict) else None
    if segments:
        times = torch.cat([seg["token_timestamps"] for seg in segments[row]])
    else:
        times = out["token_timestamps"][row]
    tokens = out["sequences"][row : row + 1, :length].cpu().numpy()
    decoded = [{"tokens": tokens, "token_timestamps": [times[:length]]}]
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
