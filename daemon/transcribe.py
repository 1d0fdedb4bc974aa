"""Speech recognition: ``/v1/audio/transcriptions`` and ``/v1/audio/translations`` (OpenAI's
multipart upload) and the IPC ops ``audio.transcribe`` / ``audio.translate`` (the same fields in
msgpack, the file as bytes).

Order of checks, all before any engine work: the upload's size (``audio_max_bytes``, OpenAI's
25 MB), the fields, the model's task, then decoding (PyAV, in a worker thread) with the duration
bound (``audio_max_seconds``). Every refusal is a 400 naming its field.

The multipart body is parsed by Starlette (python-multipart): file parts up to 1 MB stay in
memory, larger ones spill to an anonymous temporary file (``tempfile.SpooledTemporaryFile``:
created 0600 and unlinked at once, so no other request or user can open it); the bytes are then
read into memory and the form is closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import anyio
from pydantic import Field

from hfd.backends.whisper_common import (
    BatchedSpeechModel,
    SpeechTask,
    TranscribeOptions,
    Transcript,
    language_code,
)
from hfd.client.errors import InvalidRequest
from hfd.daemon import audio, audio_formats, reqctx
from hfd.daemon.schema import KeepAlive, _Base, parse_keep_alive

if TYPE_CHECKING:
    from starlette.requests import Request

    from hfd.daemon.media_worker import MediaScheduler
    from hfd.daemon.service import Service

TASK = "transcribe"


class TranscriptionRequest(_Base):
    # The HTTP door cancels the work when the client goes away before the reply.
    cancel_on_disconnect: ClassVar[bool] = True
    speech_task: ClassVar[SpeechTask] = "transcribe"

    model: Annotated[str, Field(min_length=1)]
    file: bytes
    filename: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = "json"
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    timestamp_granularities: list[Literal["segment", "word"]] | None = None
    keep_alive: KeepAlive = None


class TranslationRequest(TranscriptionRequest):
    """Into English: Whisper's translate task (OpenAI's translations take no language)."""

    speech_task: ClassVar[SpeechTask] = "translate"


_FORM_FIELDS = ("model", "language", "prompt", "response_format", "temperature", "keep_alive")


async def read_form(request: Request, max_bytes: int) -> dict[str, Any]:
    """A multipart body as the request's fields (the file's bytes under ``file``)."""
    try:
        form = await request.form(max_files=1, max_fields=32)
    except Exception as exc:  # malformed multipart, too many parts
        raise InvalidRequest(f"cannot read the multipart form: {exc}", param="file") from None
    try:
        data: dict[str, Any] = {}
        for name in _FORM_FIELDS:
            value = form.get(name)
            if isinstance(value, str):
                data[name] = value
        granularities = [g for g in form.getlist("timestamp_granularities[]") if isinstance(g, str)]
        granularities += [g for g in form.getlist("timestamp_granularities") if isinstance(g, str)]
        if granularities:
            data["timestamp_granularities"] = granularities
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("send the audio as the multipart file field 'file'", param="file")
        if upload.size is not None and upload.size > max_bytes:
            raise _too_big(upload.size, max_bytes)
        data["file"] = await upload.read()
        data["filename"] = upload.filename
        return data
    finally:
        await form.close()


def _too_big(size: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"the file is {size} bytes; the limit is {limit} bytes per request", param="file",
        details={"bytes": size, "max_bytes": limit},
    )  # fmt: skip


def options(req: TranscriptionRequest, multilingual: bool = True) -> TranscribeOptions:
    language = None
    if req.language and req.speech_task == "transcribe":
        language = language_code(req.language)
    grains = set(req.timestamp_granularities or ())
    if "word" in grains and req.response_format != "verbose_json":  # OpenAI's rule: only it has words
        raise InvalidRequest(
            "word timestamps need response_format verbose_json", param="timestamp_granularities"
        )
    return TranscribeOptions(
        task=req.speech_task,
        language=language,
        prompt=req.prompt or None,
        temperature=req.temperature,
        # verbose_json without granularities has segments, as OpenAI's default.
        timestamps=(req.response_format in audio_formats.TIMED and grains != {"word"}) or "segment" in grains,
        words="word" in grains,
    )


async def transcribe(service: Service, req: TranscriptionRequest) -> dict[str, Any] | str:
    """The reply body: a dict for json and verbose_json, text for text, srt and vtt."""
    settings = service.settings
    if len(req.file) > settings.audio_max_bytes:
        raise _too_big(len(req.file), settings.audio_max_bytes)
    opts = options(req)
    keep_alive = parse_keep_alive(req.keep_alive)
    async with service.manager.acquire(req.model, keep_alive) as lm:
        if lm.task != TASK:
            raise InvalidRequest(
                f"model {lm.name!r} is a {lm.task} model, not a speech-recognition model", param="model"
            )
        samples = await anyio.to_thread.run_sync(
            lambda: audio.decode(req.file, max_seconds=settings.audio_max_seconds)
        )
        scheduler: MediaScheduler = lm.scheduler  # type: ignore[assignment]
        model = lm.model
        transcript: Transcript
        if isinstance(model, BatchedSpeechModel) and (key := model.batch_key(samples, opts)) is not None:
            limit = min(settings.audio_max_batch, model.max_batch)
            transcript = await scheduler.run_batched(
                model.transcribe_batch, (samples, opts), key=key, limit=limit
            )
        else:
            transcript = await scheduler.run(model.transcribe, samples, opts)  # type: ignore[union-attr]
    reqctx.note_tokens(0, transcript.tokens)
    return audio_formats.render(transcript, req.response_format, req.speech_task)
