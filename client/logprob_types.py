"""Logprobs in the client's result types, shaped like the OpenAI SDK's (``choice.logprobs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int] | None = None


@dataclass(frozen=True)
class ChatCompletionTokenLogprob:
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class ChoiceLogprobs:
    """A chat choice's logprobs: one entry per generated token."""

    content: list[ChatCompletionTokenLogprob] | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> ChoiceLogprobs | None:
        if not body:
            return None
        content = [
            ChatCompletionTokenLogprob(
                str(e.get("token", "")),
                float(e.get("logprob", 0.0)),
                e.get("bytes"),
                [
                    TopLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)), t.get("bytes"))
                    for t in e.get("top_logprobs") or []
                ],
            )
            for e in body.get("content") or []
        ]
        return cls(content)


@dataclass(frozen=True)
class CompletionLogprobs:
    """A completion choice's logprobs (with echo the prompt's tokens first, the first ``None``)."""

    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> CompletionLogprobs | None:
        if not body:
            return None
        return cls(
            list(body.get("tokens") or []),
            list(body.get("token_logprobs") or []),
            list(body.get("top_logprobs") or []),
            list(body.get("text_offset") or []),
        )
