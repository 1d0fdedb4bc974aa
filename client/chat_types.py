"""Chat completions, completions and their streamed chunks, shaped like the OpenAI SDK's (see
``types``: plain dataclasses, unknown keys ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hfd.client.logprob_types import ChoiceLogprobs, CompletionLogprobs
from hfd.client.types import Usage, get_field

# ----------------------------------------------------------------------------- chat


@dataclass(frozen=True)
class Function:
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class ToolCall:
    id: str
    function: Function
    type: str = "function"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        fn = d.get("function") or {}
        return cls(str(d.get("id", "")), Function(str(fn.get("name", "")), str(fn.get("arguments", ""))))


@dataclass(frozen=True)
class ChatCompletionMessage:
    role: str
    content: str | None
    tool_calls: list[ToolCall] | None = None


@dataclass(frozen=True)
class Choice:
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


@dataclass(frozen=True)
class ChatCompletion:
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None
    object: str = "chat.completion"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ChatCompletion:
        def choice(c: dict[str, Any], index: int) -> Choice:
            message = c.get("message") or {}
            role = str(get_field(message, "role", "assistant"))
            raw = message.get("tool_calls")
            calls = [ToolCall.from_dict(x) for x in raw] if raw else None
            reply = ChatCompletionMessage(role, message.get("content"), calls)
            return Choice(index, reply, c.get("finish_reason"), ChoiceLogprobs.from_dict(c.get("logprobs")))

        return cls(**_generated(body, choice))


def _generated(body: dict[str, Any], choice: Callable[[dict[str, Any], int], Any]) -> dict[str, Any]:
    """The fields a chat completion, its chunks and a completion share; ``choice`` reads one
    choice (with its index)."""
    return {
        "id": str(get_field(body, "id", "")),
        "created": int(get_field(body, "created", 0)),
        "model": str(get_field(body, "model", "")),
        "choices": [choice(c, int(get_field(c, "index", 0))) for c in get_field(body, "choices", [])],
        "usage": Usage.from_dict(body.get("usage")),
    }


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed call: the first has ``id`` and ``name``, the rest ``arguments``
    fragments to append (OpenAI's ``delta.tool_calls``)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCallDelta:
        fn = d.get("function") or {}
        return cls(int(d.get("index", 0)), d.get("id"), fn.get("name"), str(fn.get("arguments") or ""))


@dataclass(frozen=True)
class ChoiceDelta:
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclass(frozen=True)
class ChunkChoice:
    index: int
    delta: ChoiceDelta
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


@dataclass(frozen=True)
class ChatCompletionChunk:
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ChatCompletionChunk:
        def choice(c: dict[str, Any], index: int) -> ChunkChoice:
            delta = c.get("delta") or {}
            raw = delta.get("tool_calls")
            calls = [ToolCallDelta.from_dict(x) for x in raw] if raw else None
            return ChunkChoice(
                index,
                ChoiceDelta(delta.get("role"), delta.get("content"), calls),
                c.get("finish_reason"),
                ChoiceLogprobs.from_dict(c.get("logprobs")),
            )

        return cls(**_generated(body, choice))


# ----------------------------------------------------------------------------- completions


@dataclass(frozen=True)
class CompletionChoice:
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


@dataclass(frozen=True)
class Completion:
    """A completion, and (as in the OpenAI SDK) also each chunk of a streamed one."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None
    object: str = "text_completion"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Completion:
        def choice(c: dict[str, Any], index: int) -> CompletionChoice:
            return CompletionChoice(
                index,
                str(get_field(c, "text", "")),
                c.get("finish_reason"),
                CompletionLogprobs.from_dict(c.get("logprobs")),
            )

        return cls(**_generated(body, choice))
