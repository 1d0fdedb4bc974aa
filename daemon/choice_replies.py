"""Reply bodies of generations on the several-choices path (``hfd.daemon.choices``): one choice
per sequence, each with its logprobs in OpenAI's shapes.

- chat: ``choices[].logprobs = {"content": [{"token", "logprob", "bytes", "top_logprobs":
  [{"token", "logprob", "bytes"}]}], "refusal": None}``;
- completions: ``choices[].logprobs = {"tokens", "token_logprobs", "top_logprobs" (a dict
  token -> logprob per position), "text_offset"}``; with echo the prompt's tokens come first,
  the first with ``None`` logprob and top logprobs.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from hfd.daemon.choices import ChoiceResult, Choices

if TYPE_CHECKING:
    from hfd.daemon.scheduler.detok_logprobs import TextLogprob
    from hfd.daemon.service import Generation
    from hfd.daemon.tools.output import ToolOutput, ToolStream


def several(gen: Generation) -> bool:
    return isinstance(getattr(gen, "_stream", None), Choices)


def _results(gen: Generation) -> list[ChoiceResult]:
    stream: Choices = gen._stream
    return stream.results


def chat_logprobs(entries: list[TextLogprob | None] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    content = []
    for e in entries:
        if e is None:
            continue
        content.append(
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.bytes),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, lp, b in e.top],
            }
        )
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[TextLogprob | None] | None, start: int = 0) -> dict[str, Any] | None:
    """``start``: the text offset of the first entry (the text already sent, when streamed)."""
    if entries is None:
        return None
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = start
    for e in entries:
        if e is None:  # the first prompt token: no logprob (its text is not known apart either)
            tokens.append("")
            values.append(None)
            tops.append(None)
            offsets.append(offset)
            continue
        tokens.append(e.token)
        values.append(e.logprob)
        top: dict[str, float] = {}
        for t, lp, _ in e.top:
            top.setdefault(t, lp)
        tops.append(top)
        offsets.append(offset)
        offset += len(e.token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def chat_completion(
    gen: Generation, message: Callable[[str], dict[str, Any]], finish: Callable[[str | None], str | None]
) -> dict[str, Any]:
    choices = [
        {
            "index": r.index,
            "message": message(r.text),
            "logprobs": chat_logprobs(r.logprobs),
            "finish_reason": finish(r.finish_reason),
        }
        for r in _results(gen)
    ]
    return body(gen, "chat.completion", choices)


def completion(gen: Generation) -> dict[str, Any]:
    choices = [
        {
            "index": r.index,
            "text": r.text,
            "logprobs": completion_logprobs(r.logprobs),
            "finish_reason": r.finish_reason,
        }
        for r in _results(gen)
    ]
    return body(gen, "text_completion", choices)


def body(gen: Generation, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole reply (``chat.completion`` or ``text_completion``) with ``choices``."""
    return {
        "id": gen.id,
        "object": obj,
        "created": gen.created,
        "model": gen.model,
        "choices": choices,
        "usage": gen.usage(),
    }


def chunk(gen: Generation, obj: str, choice: dict[str, Any], with_usage: bool) -> dict[str, Any]:
    """One stream chunk of ``choice``; with include_usage every chunk carries ``usage: null``
    except the last one (``usage_chunk``)."""
    chunk: dict[str, Any] = {
        "id": gen.id,
        "object": obj,
        "created": gen.created,
        "model": gen.model,
        "choices": [choice],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(gen: Generation, obj: str) -> dict[str, Any]:
    return {
        "id": gen.id,
        "object": obj,
        "created": gen.created,
        "model": gen.model,
        "choices": [],
        "usage": gen.usage(),
    }


async def chat_chunks(gen: Generation, *, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
    """Each choice's chunks: the role, its deltas (``content``, or with tools ``content`` and
    ``tool_calls`` deltas as the single-choice stream has them), its finish reason."""
    obj = "chat.completion.chunk"
    output: ToolOutput | None = getattr(gen, "tools", None)
    calls: dict[int, ToolStream] = {}  # per choice, with tools: its own call parser
    started: set[int] = set()

    def one(index: int, delta: dict[str, Any], lps: Any = None, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish}
        return chunk(gen, obj, choice, include_usage)

    async for piece in gen:
        i = piece.index
        if i not in started:
            started.add(i)
            if output is not None:
                calls[i] = output.stream()
            yield one(i, {"role": "assistant", "content": ""})
        lps = chat_logprobs(piece.logprobs)
        stream = calls.get(i)
        if stream is None:
            if piece.text or piece.logprobs:
                yield one(i, {"content": piece.text}, lps)
        else:
            deltas = stream.feed(piece.text) if piece.text else []
            if not deltas and piece.logprobs:  # text held back (it may open a call): logprobs go now
                deltas = [{"content": ""}]
            for k, delta in enumerate(deltas):
                yield one(i, delta, lps if k == 0 else None)
        if piece.finish_reason is not None:
            finish = piece.finish_reason
            if stream is not None and output is not None:
                for delta in stream.finish():  # what was held back, and the calls' last deltas
                    yield one(i, delta)
                finish = output.finish_reason(finish)  # this choice's: "tool_calls" if it called
            yield one(i, {}, None, finish)
    if include_usage:
        yield usage_chunk(gen, obj)


async def completion_chunks(gen: Generation, *, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
    obj = "text_completion"
    sent: dict[int, int] = {}  # characters sent per choice: the text offsets go on from there
    async for piece in gen:
        start = sent.get(piece.index, 0)
        sent[piece.index] = start + len(piece.text)
        if piece.text or piece.logprobs or piece.finish_reason is not None:
            choice = {
                "index": piece.index,
                "text": piece.text,
                "logprobs": completion_logprobs(piece.logprobs, start),
                "finish_reason": piece.finish_reason,
            }
            yield chunk(gen, obj, choice, include_usage)
    if include_usage:
        yield usage_chunk(gen, obj)
