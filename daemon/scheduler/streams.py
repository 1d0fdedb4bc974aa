"""What a generation request reads: :class:`TokenChunk` pieces through a :class:`GenerationStream`,
and :func:`deliver`, which the scheduler's worker thread hands a step's pieces to the streams'
event loops with.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hfd.client.errors import Cancelled, HfdError
from hfd.daemon.scheduler.detok_logprobs import TextLogprob

if TYPE_CHECKING:
    from hfd.daemon.scheduler.generation import GenerationScheduler


@dataclass(frozen=True)
class TokenChunk:
    text: str  # new text since the previous chunk ("" when a token completes no character)
    token_ids: list[int]
    finish_reason: str | None  # "stop" | "length" | "cancelled" | None; set on the last chunk only
    # When the request asked (SamplingParams.logprobs): one per token of token_ids.
    logprobs: list[TextLogprob | None] | None = None
    # On the first chunk, when it asked (prompt_logprobs): one per prompt token, the first None.
    prompt_logprobs: list[TextLogprob | None] | None = None
    # On the last chunk, when a stop string ended the output: which one.
    stop_sequence: str | None = None

    def then(self, later: TokenChunk) -> TokenChunk:
        """This chunk and a later one of the same stream as one (a stream's pacing holds chunks)."""
        lps = (
            None
            if self.logprobs is None and later.logprobs is None
            else [*(self.logprobs or ()), *(later.logprobs or ())]
        )
        return TokenChunk(
            self.text + later.text, [*self.token_ids, *later.token_ids], later.finish_reason, lps,
            self.prompt_logprobs if self.prompt_logprobs is not None else later.prompt_logprobs, later.stop_sequence,
        )  # fmt: skip


class GenerationStream:
    """The output of one request: an async iterator of ``TokenChunk`` and a context manager.

    Chunks are appended by the scheduler's worker through ``loop.call_soon_threadsafe``; all
    fields are read and written on the event loop only.
    """

    def __init__(self, scheduler: GenerationScheduler, request_id: int, prompt_tokens: int) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None  # the stop string that ended it, if one did
        self._scheduler = scheduler
        self._loop = asyncio.get_running_loop()
        self._buffer: collections.deque[TokenChunk | HfdError] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # the last item was put in the buffer
        self._closed = False  # the reader closed the stream

    # ----------------------------------------------------------------- worker side (on the loop)

    def _put(self, item: TokenChunk | HfdError) -> None:
        if self._ended:
            return
        if isinstance(item, TokenChunk):
            self.completion_tokens += len(item.token_ids)
            if item.finish_reason is not None:
                self.finish_reason = item.finish_reason
                self.stop_sequence = item.stop_sequence
                self._ended = True
        else:
            self.finish_reason = "cancelled" if isinstance(item, Cancelled) else "error"
            self._ended = True
        if self._closed:
            return
        self._buffer.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ----------------------------------------------------------------- reader side

    @property
    def finished(self) -> bool:
        return self._ended

    def cancel(self) -> None:
        """Thread-safe. The sequence leaves the batch at the next step."""
        self._scheduler._cancel(self.request_id)

    async def aclose(self) -> None:
        """Cancel if not finished; idempotent."""
        if not self._ended:
            self.cancel()
            # Whatever the worker still sends is dropped: the reader's view ends here.
            self._ended = True
            self.finish_reason = "cancelled"
        self._closed = True
        self._buffer.clear()

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> TokenChunk:
        while not self._buffer:
            if self._ended or self._closed:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                # The reader went away (client disconnected, task cancelled): free the row.
                if not self._ended:
                    self.cancel()
                raise
            finally:
                self._waiter = None
        item = self._buffer.popleft()
        if isinstance(item, HfdError):
            raise item
        return item

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def deliver(items: Sequence[tuple[GenerationStream, TokenChunk | HfdError]]) -> None:
    """Hand a step's chunks to their event loops: one wake-up per loop per step."""
    if not items:
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationStream, TokenChunk | HfdError]]] = {}
    for stream, item in items:
        by_loop.setdefault(stream._loop, []).append((stream, item))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            pass


def _put_all(batch: list[tuple[GenerationStream, TokenChunk | HfdError]]) -> None:
    for stream, item in batch:
        stream._put(item)


class CountsOf:
    """A wrapper of a stream that reads its counts through: ``prompt_tokens``,
    ``completion_tokens`` and ``finish_reason`` of ``_stream`` (set by the subclass)."""

    _stream: Any

    @property
    def prompt_tokens(self) -> int:
        return int(self._stream.prompt_tokens)

    @property
    def completion_tokens(self) -> int:
        return int(self._stream.completion_tokens)

    @property
    def finish_reason(self) -> str | None:
        return self._stream.finish_reason  # type: ignore[no-any-return]
