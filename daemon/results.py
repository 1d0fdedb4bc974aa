"""What the service's calls return: an :class:`EmbeddingResult`, or a running :class:`Generation`
that the doors iterate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from hfd.daemon import reqctx
from hfd.daemon.scheduler.streams import CountsOf
from hfd.daemon.tools.output import ToolOutput


@dataclass(frozen=True)
class EmbeddingResult:
    model: str
    vectors: np.ndarray  # float32 (n, d)
    prompt_tokens: int
    cached: bool = False  # served from the response cache


class Generation(CountsOf):
    """One running generation: iterate its chunks, read usage at the end.

    Holds the model (it cannot be unloaded) until closed; closing before the end cancels the
    sequence, which leaves the batch at the next step.
    """

    def __init__(self, *, kind: str, model: str, stream: Any, stack: AsyncExitStack) -> None:
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.kind = kind
        self.model = model
        self.created = int(time.time())
        self._stream = stream
        self._stack = stack
        self._closed = False
        # The request this generation serves (usage and time to first token are noted there).
        self._request = reqctx.current()
        # How a chat reply is read for tool calls (hfd.daemon.tools.output); None: plain text.
        self.tools: ToolOutput | None = None

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output, once it has ended (a live stream's only)."""
        value = getattr(self._stream, "stop_sequence", None)
        return value if isinstance(value, str) else None

    @property
    def cached(self) -> bool:
        """Served from the response cache (replayed chunks, no model involved)."""
        return bool(getattr(self._stream, "cached", False))

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._stream:
                reqctx.note_first_token(self._request)
                yield chunk
        except Exception as exc:
            # The model's lease sees the failure: its circuit breaker counts engine errors.
            await self.aclose(exc)
            raise
        finally:
            await self.aclose()

    async def text(self) -> str:
        parts = [chunk.text async for chunk in self]
        return "".join(parts)

    async def aclose(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        reqctx.note_tokens(self.prompt_tokens, self.completion_tokens, ctx=self._request)
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()
            if error is None:
                await self._stack.aclose()
            else:
                await self._stack.__aexit__(type(error), error, error.__traceback__)

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
