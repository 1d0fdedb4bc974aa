"""A chat reply with tools: the message (content and ``tool_calls``) of a whole reply, the deltas
of a streamed one, and the finish reason (``tool_calls`` when calls were made)."""

from __future__ import annotations

from typing import Any

from hfd.daemon.tools.parsers import CallStream, Family, parse


class ToolOutput:
    """How one generation's text is read for tool calls (its family, one call or several)."""

    def __init__(self, family: Family, *, parallel: bool) -> None:
        self.family = family
        self.parallel = parallel
        self.called = False

    def message(self, text: str) -> dict[str, Any]:
        parsed = parse(self.family, text, parallel=self.parallel)
        self.called = bool(parsed.calls)
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content, "refusal": None}
        if parsed.calls:
            message["tool_calls"] = [c.openai() for c in parsed.calls]
        return message

    def stream(self) -> ToolStream:
        return ToolStream(self)

    def finish_reason(self, reason: str | None) -> str | None:
        # A reply cut by max_tokens stays "length"; one that ended after its calls is "tool_calls".
        return "tool_calls" if self.called and reason == "stop" else reason


class ToolStream:
    def __init__(self, output: ToolOutput) -> None:
        self._output = output
        self._stream = CallStream(output.family, parallel=output.parallel)

    def feed(self, text: str) -> list[dict[str, Any]]:
        return self._stream.feed(text)

    def finish(self) -> list[dict[str, Any]]:
        deltas = self._stream.finish()
        self._output.called = bool(self._stream.calls)
        return deltas


def reply_parts(chat: dict[str, Any]) -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
    """A whole chat completion body as the Responses and Messages APIs translate it: its first
    choice, the reply's text (None when the reply is tool calls alone: no empty text part then)
    and its tool calls."""
    choice = chat["choices"][0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    text = message.get("content") or ""
    return choice, text if text or not calls else None, calls
