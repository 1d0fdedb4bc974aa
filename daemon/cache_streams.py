"""Generations through the response cache: a cached one replayed as a stream, a live one recorded.

Both iterate like the scheduler's ``GenerationStream`` (chunks, then ``prompt_tokens``,
``completion_tokens``, ``finish_reason``), so the service and the doors cannot tell a replay
from a live generation except by ``cached``.
"""

from __future__ import annotations

from typing import Any

from hfd.daemon.cache import ResponseCache, encode_generation
from hfd.daemon.scheduler.streams import CountsOf, TokenChunk


class ReplayStream:
    """A cached generation, iterated like the scheduler's ``GenerationStream``."""

    def __init__(self, chunks: list[TokenChunk], prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.cached = True
        self._chunks = list(chunks)
        self._next = 0

    def __aiter__(self) -> ReplayStream:
        return self

    async def __anext__(self) -> TokenChunk:
        if self._next >= len(self._chunks):
            raise StopAsyncIteration
        chunk = self._chunks[self._next]
        self._next += 1
        self.completion_tokens += len(chunk.token_ids)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        return chunk

    async def aclose(self) -> None:
        self._next = len(self._chunks)


class RecordingStream(CountsOf):
    """Passes a live generation through and stores it in the cache once it ended normally."""

    def __init__(self, inner: Any, cache: ResponseCache, key: str) -> None:
        self._stream = inner
        self._cache = cache
        self._key = key
        self._chunks: list[TokenChunk] = []
        self.cached = False

    def __aiter__(self) -> RecordingStream:
        return self

    async def __anext__(self) -> TokenChunk:
        chunk: TokenChunk = await self._stream.__anext__()
        self._chunks.append(chunk)
        if chunk.finish_reason in ("stop", "length"):
            await self._cache.aput(self._key, encode_generation(self._chunks, self.prompt_tokens))
        return chunk

    async def aclose(self) -> None:
        await self._stream.aclose()
