"""Response bodies both doors send, built from the service's results: the OpenAI API's shapes
(models, completions, chat completions, their stream chunks, embeddings) and the admin answers
(version, hardware).

The HTTP door sends these objects as JSON (and SSE ``data:`` events), the IPC door as msgpack
bodies of ``result``/``chunk`` messages, so this module belongs to neither door. The chunk
generators here are the one definition of how a stream is cut into chunks (a first chunk with
the assistant role, content deltas, a last chunk with ``finish_reason``, then, when asked, a
usage chunk with no choices).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from hfd import __version__
from hfd.client.errors import ModelNotFound
from hfd.client.protocol import PROTOCOL_VERSION
from hfd.daemon import choice_replies

if TYPE_CHECKING:
    from hfd.daemon.service import EmbeddingResult, Generation


def model_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": models}


def model_entry(models: list[dict[str, Any]], model_id: str) -> dict[str, Any]:
    """One model of ``models`` by id (``GET /v1/models/{id}``)."""
    for model in models:
        if model["id"] == model_id:
            return model
    raise ModelNotFound(f"model {model_id!r} is not served here", param="model")


def _finish_reason(gen: Generation) -> str | None:
    tools = getattr(gen, "tools", None)  # chat with tools: "tool_calls" once calls were made
    return tools.finish_reason(gen.finish_reason) if tools is not None else gen.finish_reason


def chat_completion(gen: Generation, text: str) -> dict[str, Any]:
    tools = getattr(gen, "tools", None)
    if choice_replies.several(gen):  # n > 1 or logprobs: one choice per sequence
        return choice_replies.chat_completion(
            gen,
            (lambda t: tools.message(t)) if tools is not None else _message,
            (lambda f: tools.finish_reason(f)) if tools is not None else (lambda f: f),
        )
    message = (
        tools.message(text) if tools is not None else {"role": "assistant", "content": text, "refusal": None}
    )
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(gen)}
    return choice_replies.body(gen, "chat.completion", [choice])


def _message(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "refusal": None}


def completion(gen: Generation, text: str) -> dict[str, Any]:
    if choice_replies.several(gen):  # n, best_of, echo, logprobs, several prompts
        return choice_replies.completion(gen)
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _finish_reason(gen)}
    return choice_replies.body(gen, "text_completion", [choice])


def _chat_chunk(
    gen: Generation, delta: dict[str, Any], finish_reason: str | None, with_usage: bool
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return choice_replies.chunk(gen, "chat.completion.chunk", choice, with_usage)


def _completion_chunk(
    gen: Generation, text: str, finish_reason: str | None, with_usage: bool
) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return choice_replies.chunk(gen, "text_completion", choice, with_usage)


async def chat_chunks(gen: Generation, *, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
    """The chunks of a streamed chat completion. Iterating consumes (and finally closes) ``gen``."""
    if choice_replies.several(gen):
        async for chunk in choice_replies.chat_chunks(gen, include_usage=include_usage):
            yield chunk
        return
    yield _chat_chunk(gen, {"role": "assistant", "content": ""}, None, include_usage)
    output = getattr(gen, "tools", None)
    tools = output.stream() if output is not None else None
    async for piece in gen:
        if not piece.text:
            continue
        if tools is None:
            yield _chat_chunk(gen, {"content": piece.text}, None, include_usage)
        else:  # content and tool_calls deltas, text that may open a call held back
            for delta in tools.feed(piece.text):
                yield _chat_chunk(gen, delta, None, include_usage)
    for delta in tools.finish() if tools is not None else ():
        yield _chat_chunk(gen, delta, None, include_usage)
    yield _chat_chunk(gen, {}, _finish_reason(gen), include_usage)
    if include_usage:
        yield choice_replies.usage_chunk(gen, "chat.completion.chunk")


async def completion_chunks(gen: Generation, *, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
    """The chunks of a streamed completion. Iterating consumes (and finally closes) ``gen``."""
    if choice_replies.several(gen):
        async for chunk in choice_replies.completion_chunks(gen, include_usage=include_usage):
            yield chunk
        return
    async for piece in gen:
        if piece.text:
            yield _completion_chunk(gen, piece.text, None, include_usage)
    yield _completion_chunk(gen, "", _finish_reason(gen), include_usage)
    if include_usage:
        yield choice_replies.usage_chunk(gen, "text_completion")


def stream_end(gen: Generation) -> dict[str, Any]:
    """The body of the IPC ``end`` message that closes a stream."""
    return {"usage": gen.usage(), "finish_reason": _finish_reason(gen)}


def embeddings(result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    data = []
    for i, row in enumerate(vectors):
        value: Any
        if encoding_format == "base64":
            # Little-endian float32 bytes, as the openai package decodes them.
            value = base64.b64encode(row.tobytes()).decode("ascii")
        else:
            value = row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def embeddings_header(result: EmbeddingResult) -> tuple[dict[str, Any], bytes]:
    """The IPC reply: a small body and the vectors as one little-endian float32 frame."""
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    body = {
        "object": "list",
        "model": result.model,
        "shape": [int(vectors.shape[0]), int(vectors.shape[1])],
        "dtype": "float32",
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return body, vectors.tobytes()


@dataclass(frozen=True)
class GenerationReply:
    """How a generation is answered: as ``chunks`` when streamed, as one ``whole`` body if not."""

    chunks: Callable[..., AsyncIterator[dict[str, Any]]]
    whole: Callable[[Generation, str], dict[str, Any]]


CHAT = GenerationReply(chat_chunks, chat_completion)
COMPLETION = GenerationReply(completion_chunks, completion)


# ----------------------------------------------------------------------------- admin


def version() -> dict[str, Any]:
    return {"version": __version__, "protocol": PROTOCOL_VERSION}


async def hardware() -> dict[str, Any]:
    """What the box has and which engine serves each task. Detection probes drivers and may
    take a moment, so it runs off the event loop."""
    from hfd.backends.hardware import hardware_json  # the engines' probes: imported when asked

    report: dict[str, Any] = await anyio.to_thread.run_sync(hardware_json)
    return report
