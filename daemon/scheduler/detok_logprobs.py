"""Engine logprobs (token ids) as text, for the reply bodies: each token's own text and UTF-8
bytes, and its top alternatives'. Done on the model's worker thread with the model's decode, so
the event loop never tokenises.

A token's text is ``decode([id])`` (special tokens decode to ""), as OpenAI-compatible servers
report it; a token that is part of a multi-byte character decodes to U+FFFD there, and its
``bytes`` are those of that text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hfd.backends.logprobs import TokenLogprob

Decode = Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class TextLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


def texted(decode: Decode, entries: Sequence[TokenLogprob | None]) -> list[TextLogprob | None]:
    memo: dict[int, str] = {}

    def text(token: int) -> str:
        if token not in memo:
            memo[token] = decode([token])
        return memo[token]

    out: list[TextLogprob | None] = []
    for e in entries:
        if e is None:
            out.append(None)
            continue
        token = text(e.token_id)
        top = tuple((text(t), lp, tuple(text(t).encode("utf-8"))) for t, lp in e.top)
        out.append(TextLogprob(token, e.logprob, tuple(token.encode("utf-8")), top))
    return out
