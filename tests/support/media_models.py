"""Tiny random-weight speech (Whisper) and image-text (CLIP, SigLIP) model folders, and the
audio and images to feed them, all made on the spot (no download can happen here).

The processors are constructed in code: ``WhisperFeatureExtractor()`` with its defaults, a
byte-level Whisper tokenizer whose vocabulary is the 256 byte symbols plus Whisper's special
tokens (languages, tasks, timestamps) in their real order, ``CLIPImageProcessor`` and
``SiglipImageProcessor`` (the slow ones: the fast ones need torchvision, which is never
installed here). The weights are random, so transcripts are garbage; the tests compare that
garbage with transformers' own greedy output on the same audio, token for token.

Audio: ``espeak_wav`` speaks a sentence with the ``espeak-ng`` binary (tests skip without it,
saying so); ``tone_wav`` writes a generated tone with PyAV, in any container PyAV writes.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from support.models import CACHE_ROOT, _cached, _fields, byte_bpe, fast_tokenizer

TINY_WHISPER_VERSION = 2
TINY_CLIP_VERSION = 1
TINY_SIGLIP_VERSION = 1


def _languages() -> list[str]:
    """Whisper's language codes, in the order of their tokens (transformers' LANGUAGES table)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return list(LANGUAGES)


def _whisper_tokenizer() -> Any:
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # The byte alphabet alone (no merges): every text encodes, one token per byte.
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|startoftranscript|>"]
    specials += [f"<|{code}|>" for code in _languages()]
    specials += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
    specials += ["<|notimestamps|>"]
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    for token in specials + timestamps:
        vocab[token] = len(vocab)
    tok = WhisperTokenizer(vocab=vocab, merges=[], model_max_length=448)
    from tokenizers import AddedToken

    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in specials[1:]]})
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    return tok


def _build_tiny_whisper(out: Path) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    tokenizer = _whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    sot = ids("<|startoftranscript|>")
    config = WhisperConfig(
        **_fields(
            vocab_size=len(tokenizer),
            num_mel_bins=80,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            # 30 s of features (3000 frames) halve to 1500 positions, as in every Whisper.
            max_source_positions=1500,
            max_target_positions=448,
            decoder_start_token_id=sot,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
            begin_suppress_tokens=[ids("Ġ"), eot],
            suppress_tokens=[],
            # Wide random logits: greedy choices are stable under float noise between engines.
            init_std=0.2,
        )
    )
    torch.manual_seed(2468)
    model: Any = WhisperForConditionalGeneration(config).to(torch.float32).eval()
    with torch.no_grad():
        # Shrunk timestamp rows (the output projection is tied to them): a random model would
        # otherwise print timestamps where a trained one, told <|notimestamps|>, prints text.
        first = ids("<|0.00|>")
        model.model.decoder.embed_tokens.weight[first:] *= 0.01
    languages = _languages()
    model.generation_config = GenerationConfig(
        **_fields(
            decoder_start_token_id=sot,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
            # Short transcripts keep tests fast (a random model never says <|endoftext|>);
            # both the daemon's engines and the oracle read this limit.
            max_length=24,
            begin_suppress_tokens=[ids("Ġ"), eot],
            suppress_tokens=[],
            is_multilingual=True,
            lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in languages},
            task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
            no_timestamps_token_id=ids("<|notimestamps|>"),
            prev_sot_token_id=ids("<|startofprev|>"),
            max_initial_timestamp_index=50,
            alignment_heads=[[1, 0], [1, 1]],
            return_timestamps=False,
        )
    )
    model.save_pretrained(out, safe_serialization=True)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)
    processor.save_pretrained(out)


def tiny_whisper(path: Path | None = None) -> Path:
    """A random-weight Whisper (d_model 64, 2+2 layers) with a byte-level tokenizer."""
    return _cached("tiny-whisper", TINY_WHISPER_VERSION, _build_tiny_whisper, path)


# ----------------------------------------------------------------------------- image-text


def _image_text_tokenizer(bos: str, eos: str, pad: str, max_length: int) -> Any:
    """A WordPiece-free byte-level BPE tokenizer trained on the test corpus, with the given
    specials around each text (CLIP: ``<|startoftext|> ... <|endoftext|>``)."""
    from tokenizers import processors

    tok = byte_bpe(list(dict.fromkeys([pad, bos, eos])), 400)
    if bos != eos and bos != pad:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", special_tokens=[(eos, tok.token_to_id(eos))]
        )
    return fast_tokenizer(tok, max_length, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=None)


def _image_text_towers(tokenizer: Any, max_positions: int, **text: Any) -> dict[str, Any]:
    """The text and vision tower configs both tiny image-text models share (32 wide, 2 layers,
    32x32 images in 8x8 patches), as ``text_config`` / ``vision_config`` keywords."""
    tower = _fields(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    text_config = {"vocab_size": len(tokenizer), **tower, "max_position_embeddings": max_positions, **text}
    return {"text_config": text_config, "vision_config": {**tower, "image_size": 32, "patch_size": 8}}


def _save_image_text(
    out: Path, model_class: Any, config: Any, seed: int, tokenizer: Any, processor: Any
) -> None:
    import torch

    torch.manual_seed(seed)
    model: Any = model_class(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)


def _build_tiny_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = _image_text_tokenizer("<|startoftext|>", "<|endoftext|>", "<|endoftext|>", 77)
    towers = _image_text_towers(
        tokenizer,
        77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(**towers, projection_dim=16)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    _save_image_text(out, CLIPModel, config, 1357, tokenizer, processor)


def _build_tiny_siglip(out: Path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tokenizer = _image_text_tokenizer("</s>", "</s>", "<pad>", 64)
    towers = _image_text_towers(
        tokenizer, 64, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    config = SiglipConfig(**towers)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    _save_image_text(out, SiglipModel, config, 9753, tokenizer, processor)


def tiny_clip(path: Path | None = None) -> Path:
    """A random-weight CLIP (32-wide towers, 32x32 images, 16-dim projection)."""
    return _cached("tiny-clip", TINY_CLIP_VERSION, _build_tiny_clip, path)


def tiny_siglip(path: Path | None = None) -> Path:
    """A random-weight SigLIP (32-wide towers, 32x32 images)."""
    return _cached("tiny-siglip", TINY_SIGLIP_VERSION, _build_tiny_siglip, path)


# ----------------------------------------------------------------------------- inputs


def tone(seconds: float, *, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    """A sine tone with a slow amplitude wobble (float32 in [-0.5, 0.5])."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * freq * t) * (0.75 + 0.25 * np.sin(2 * np.pi * 1.5 * t))
    return wave.astype(np.float32)


def encode_audio(samples: np.ndarray, *, rate: int = 16000, fmt: str = "wav", channels: int = 1) -> bytes:
    """``samples`` (mono float32) written with PyAV into container ``fmt`` (wav, flac, mp3, ogg)."""
    import av

    codec = {"wav": "pcm_s16le", "flac": "flac", "mp3": "libmp3lame", "ogg": "libvorbis"}[fmt]
    layout = "mono" if channels == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=rate, layout=layout)
        planar = np.repeat(samples[None, :], channels, axis=0).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def tone_wav(seconds: float, **kwargs: Any) -> bytes:
    return encode_audio(tone(seconds), **kwargs)


def tone_wav_and_samples(seconds: float = 2.0, freq: float = 330.0) -> tuple[bytes, np.ndarray]:
    """A tone as WAV bytes, and as the floats that 16-bit WAV holds (PyAV's s16 -> flt
    conversion divides by 32768): the daemon decodes the one, the oracle gets the other."""
    wave = tone(seconds, freq=freq)
    pcm = np.clip(np.round(wave * 32768), -32768, 32767).astype(np.int16)
    return encode_audio(wave), pcm.astype(np.float32) / 32768


def whisper_oracle(path: Path) -> Callable[..., str]:
    """transformers' own greedy ``generate`` on 16 kHz samples (keywords go to ``generate``),
    decoded without special tokens: the text the daemon's engines must give."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    processor = WhisperProcessor.from_pretrained(path)

    def run(samples: np.ndarray, **kwargs: Any) -> str:
        feats = processor.feature_extractor(samples, sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(feats.input_features, num_beams=1, do_sample=False, **kwargs)
        return str(processor.tokenizer.decode(out[0], skip_special_tokens=True))

    return run


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_wav(text: str) -> bytes:
    """``text`` spoken by espeak-ng, as WAV bytes (22050 Hz mono)."""
    return subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True, timeout=60).stdout


def png(width: int = 48, height: int = 40, *, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A noisy RGB image encoded as ``fmt``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


__all__ = [
    "CACHE_ROOT",
    "data_url",
    "encode_audio",
    "espeak_available",
    "espeak_wav",
    "png",
    "tiny_clip",
    "tiny_siglip",
    "tiny_whisper",
    "tone",
    "tone_wav",
    "tone_wav_and_samples",
    "whisper_oracle",
]
