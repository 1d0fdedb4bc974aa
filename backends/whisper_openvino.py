"""Whisper on OpenVINO GenAI's ``WhisperPipeline``.

The snapshot is exported once with optimum-intel (``automatic-speech-recognition-with-past``,
with the tokenizer converted by openvino-tokenizers, which the pipeline needs) into the export
cache; a folder that already holds ``openvino_encoder_model.xml`` is used as it is. GenAI chunks
audio over 30 s itself. The pipeline's ``generate`` holds the GIL while it runs, so it is called
on the model's worker thread, never on the event loop. A model whose generation config names
``alignment_heads`` gets a pipeline built with ``word_timestamps``, so a request may ask for
word times (``result.words``).

One request per call: GenAI 2026.4's ``WhisperPipeline.generate`` takes one audio input (a
sequence of floats), so this engine offers no batched call and the media scheduler gives it
requests one at a time.

Precision: f32 unless the model's ``dtype`` says otherwise: OpenVINO's bf16 default on CPUs
with native bf16 changes greedy tokens (``/work/shared/ENVIRONMENT.md``); f32 matches
transformers.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import _hf, whisper_common
from hfd.backends.base import LoadOptions
from hfd.backends.exports import ExportCache, dist_version, export_key
from hfd.backends.whisper_common import SAMPLE_RATE, Segment, TranscribeOptions, Transcript, known_language
from hfd.client.errors import HfdError, InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)

IR_FILE = "openvino_encoder_model.xml"
EXPORT_TASK = "automatic-speech-recognition-with-past"
EXPORT_REVISION = 1


class OpenVINOWhisper:
    def __init__(self, pipeline: Any, folder: Path, multilingual: bool, aligned: bool = False) -> None:
        self.pipeline = pipeline
        self.folder = folder
        self._multilingual = multilingual
        self.aligned = aligned  # built with word_timestamps: the model names alignment heads

    @property
    def multilingual(self) -> bool:
        return self._multilingual

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        whisper_common.check_words("openvino", options, len(audio) / SAMPLE_RATE, self.aligned)
        config = self.pipeline.get_generation_config()
        if self._multilingual:
            config.task = options.task
            if options.language is not None:
                if not known_language(options.language):
                    raise InvalidRequest(f"unknown language {options.language!r}", param="language")
                config.language = f"<|{options.language}|>"
        if options.prompt:
            config.initial_prompt = options.prompt
        if options.temperature > 0:
            config.do_sample = True
            config.temperature = options.temperature
        config.return_timestamps = options.timestamps
        config.word_timestamps = options.words
        result = self.pipeline.generate(np.ascontiguousarray(audio, dtype=np.float32), config)
        text = result.texts[0] if result.texts else ""
        segments: tuple[Segment, ...] = ()
        if options.timestamps and result.chunks:
            segments = tuple(
                Segment(start=float(c.start_ts), end=float(c.end_ts), text=c.text) for c in result.chunks
            )
        tokens = len(result.tokens[0]) if getattr(result, "tokens", None) else 0
        language = options.language
        detected = getattr(result, "language", None)
        if language is None and isinstance(detected, str) and detected:
            language = detected.removeprefix("<|").removesuffix("|>")
        words = None
        if options.words:
            words = tuple(
                whisper_common.Word(str(w.word), float(w.start_ts), float(w.end_ts))
                for w in result.words or ()
            )
        return Transcript(
            text=text, duration=len(audio) / SAMPLE_RATE, language=language, segments=segments, tokens=tokens,
            words=words,
        )  # fmt: skip

    def memory_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("openvino_*.bin"))

    def close(self) -> None:
        self.pipeline = None


def prepare_ir(opts: LoadOptions) -> Path:
    """The folder of the Whisper IR, exported into the export cache on first use."""
    config = _hf.require_model_dir(opts.path)
    if (opts.path / IR_FILE).is_file():
        return opts.path
    _hf.check_weights(opts.path, allow_pickle=bool(opts.extra.get("allow_pickle")))
    if opts.cache_dir is None:
        raise ModelUnavailable("the openvino engine needs a cache directory for its exports")

    options = {"format": "openvino-ir", "task": EXPORT_TASK, "optimum_intel": dist_version("optimum-intel"),
               "revision": EXPORT_REVISION}  # fmt: skip
    key = export_key(opts.path, engine="openvino", engine_version=dist_version("openvino"), options=options,
                     commit=opts.extra.get("commit"))  # fmt: skip
    meta = {"engine": "openvino", "task": "transcribe", "source": str(opts.path),
            "model_type": config.get("model_type"), "options": options}  # fmt: skip

    def build(out: Path) -> None:
        try:
            from optimum.exporters.openvino import main_export
            from optimum.intel import OVConfig
        except Exception as exc:
            raise ModelUnavailable(
                f"exporting to OpenVINO needs optimum-intel (install hfd[openvino]): {exc}"
            ) from exc
        log.info("openvino export", extra={"model_path": str(opts.path), "task": EXPORT_TASK})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                main_export(str(opts.path), output=out, task=EXPORT_TASK, library_name="transformers",
                            ov_config=OVConfig(dtype="fp32"), convert_tokenizer=True,
                            trust_remote_code=opts.trust_remote_code, local_files_only=True)  # fmt: skip
        except HfdError:
            raise
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO export of the Whisper model failed: {exc}") from exc

    return ExportCache(opts.cache_dir).get_or_build(key, build, meta).path


def load(opts: LoadOptions) -> OpenVINOWhisper:
    import openvino_genai

    from hfd.backends.openvino_cpu import precision_hint

    folder = prepare_ir(opts)
    device = opts.device.upper() if opts.device else "CPU"
    properties: dict[str, Any] = {}
    # Word times need the pipeline built for them (GenAI reads alignment_heads from the
    # model's generation_config.json); a model without them is refused words at request time.
    generation = _generation_config(opts.path)
    aligned = bool(generation.get("alignment_heads"))
    if aligned:
        properties["word_timestamps"] = True
    if device.startswith("CPU"):
        properties["INFERENCE_PRECISION_HINT"] = precision_hint(opts.dtype) or "f32"
        if opts.threads > 0:
            properties["INFERENCE_NUM_THREADS"] = opts.threads
    try:
        pipeline = openvino_genai.WhisperPipeline(str(folder), device, **properties)
    except Exception as exc:
        raise ModelUnavailable(f"OpenVINO cannot load the Whisper model: {exc}") from exc
    config = _hf.require_model_dir(opts.path)
    multilingual = bool(config.get("vocab_size", 0) >= 51865 or generation.get("is_multilingual"))
    return OpenVINOWhisper(pipeline, folder, multilingual, aligned)


def _generation_config(path: Path) -> dict[str, Any]:
    import json

    try:
        found = json.loads((path / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
