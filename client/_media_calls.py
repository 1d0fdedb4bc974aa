"""Request builders for speech recognition (and image embeddings go through ``embeddings``);
re-exported for ``_resources``, which declares them like every other operation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from hfd.client._calls import Call, KeepAlive, _body, clean
from hfd.client.protocol import OP_TRANSCRIBE, OP_TRANSLATE

AudioFile = bytes | str | Path | BinaryIO


def _read(file: AudioFile) -> bytes:
    if isinstance(file, bytes):
        return file
    if isinstance(file, (str, Path)):
        return Path(file).read_bytes()
    return file.read()


def _speech(op: str, model: str, file: AudioFile, params: dict[str, Any], timeout: float | None) -> Call[Any]:
    body = clean({"model": model, "file": _read(file), **params})
    textual = params.get("response_format") in ("text", "srt", "vtt")

    def reply(r: Any) -> Any:
        # text, srt and vtt come back as text (an empty one decodes as an empty body).
        if isinstance(r.body, str) or textual:
            return r.body or ""
        return _body(r)

    return Call(op, body, reply, timeout)


def transcribe(
    model: str,
    file: AudioFile,
    *,
    language: str | None = None,
    prompt: str | None = None,
    response_format: str = "json",
    temperature: float | None = None,
    keep_alive: KeepAlive = None,
    timeout: float | None = None,
) -> Call[Any]:
    """Speech to text with a Whisper model, as OpenAI's ``audio.transcriptions.create``: a dict
    for ``json`` / ``verbose_json``, text for ``text``, ``srt`` and ``vtt``. ``file``: bytes, a
    path or a binary file object."""
    params = {"language": language, "prompt": prompt, "response_format": response_format,
              "temperature": temperature, "keep_alive": keep_alive}  # fmt: skip
    return _speech(OP_TRANSCRIBE, model, file, params, timeout)


def translate(
    model: str,
    file: AudioFile,
    *,
    prompt: str | None = None,
    response_format: str = "json",
    temperature: float | None = None,
    keep_alive: KeepAlive = None,
    timeout: float | None = None,
) -> Call[Any]:
    """Speech in any language to English text (Whisper's translate task)."""
    params = {"prompt": prompt, "response_format": response_format, "temperature": temperature,
              "keep_alive": keep_alive}  # fmt: skip
    return _speech(OP_TRANSLATE, model, file, params, timeout)
